"""The feature store: declarations, the point-in-time engine and the online stores."""

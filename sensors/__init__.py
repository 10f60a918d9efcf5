"""Sensors that close Mallard's loops (drift → retrain, new traces → online eval, …)."""

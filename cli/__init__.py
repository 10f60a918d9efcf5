"""The `mallard` command line: a front end of the deployment (catalog/ and resources/)."""

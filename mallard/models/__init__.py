"""Models: declarations, PyCaret training tracked in MLflow, the promotion gate, explanations.

Plain Python (no Dagster): assets, the CLI and the serving API call it. Heavy libraries
(pycaret, mlflow, shap, sklearn, matplotlib) are imported inside the functions that use them.
"""

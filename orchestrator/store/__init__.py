"""The stores: the run ledger (ledger, ledger_schema, states), the MLflow layout (tracking,
mlflow_view) and their reconciliation (bookkeeping)."""

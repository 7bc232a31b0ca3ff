-- Runs once, when the pgdata volume is empty (postgres image: /docker-entrypoint-initdb.d).
-- POSTGRES_DB=mlflow holds MLflow's tables; the scalelab ledger gets its own database,
-- owned by POSTGRES_USER (the role running this script).
CREATE DATABASE scalelab;

-- Run once by the postgres image, on the first start with an empty data volume
-- (/docker-entrypoint-initdb.d). One database per store, all owned by $POSTGRES_USER:
--   autoft  the job store (jobs, trials, events, API keys; migrated by `autoft serve` / `autoft runner`)
--   optuna  the Optuna RDB storage (one study per job)
--   mlflow  the MLflow tracking and model-registry store (migrated by `mlflow server`)
-- CREATE DATABASE cannot run in a transaction or a DO block; \gexec runs each generated statement, and
-- only for the databases that do not exist yet (the image itself may have created $POSTGRES_DB).
SELECT format('CREATE DATABASE %I', wanted.name)
FROM unnest(ARRAY['autoft', 'optuna', 'mlflow']) AS wanted(name)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = wanted.name)
\gexec

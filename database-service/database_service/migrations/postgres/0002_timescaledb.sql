-- requires-extension: timescaledb
-- Applied only where the extension is available (pg_available_extensions); until then
-- it stays pending, so installing TimescaleDB later converts the tables on next start.
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('signals', 'ts', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('trades', 'exit_time', migrate_data => true, if_not_exists => true);

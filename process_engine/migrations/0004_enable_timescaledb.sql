-- 0004_enable_timescaledb: for a database migrated while TimescaleDB was installed but
-- not preloaded (0001 then leaves process_history a plain table and says so). Once the
-- server preloads it, `SELECT process_engine_enable_timescaledb();` converts it.
-- Both functions are replaced on a second run.

-- Whether the TimescaleDB loader is in shared_preload_libraries (the same test as 0001).
CREATE OR REPLACE FUNCTION process_engine_timescaledb_preloaded() RETURNS BOOLEAN
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) AS lib
        WHERE btrim(lib, ' "') ~ '(^|/)timescaledb$'
    );
EXCEPTION WHEN insufficient_privilege THEN
    -- The loader defines this setting of its own only when it was preloaded.
    RETURN current_setting('timescaledb.disable_load', TRUE) IS NOT NULL;
END
$$;

-- Makes process_history a hypertable (moving its rows into chunks) and
-- process_history_hourly a continuous aggregate; a second call changes nothing.
CREATE OR REPLACE FUNCTION process_engine_enable_timescaledb() RETURNS TEXT
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND NOT process_engine_timescaledb_preloaded() THEN
        -- CREATE EXTENSION would end the connection with a FATAL error instead.
        RAISE EXCEPTION 'timescaledb is not in shared_preload_libraries'
            USING HINT = 'add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL';
    END IF;
    CREATE EXTENSION IF NOT EXISTS timescaledb;
    PERFORM create_hypertable(
        'process_history'::regclass, 'timestamp'::name,
        if_not_exists => TRUE,
        migrate_data => TRUE,
        create_default_indexes => FALSE
    );
    -- The plain view makes way for the aggregate (a second call finds the aggregate).
    IF to_regclass('process_history_hourly') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = current_schema() AND view_name = 'process_history_hourly'
    ) THEN
        DROP VIEW process_history_hourly;
    END IF;
    RETURN process_engine_create_history_hourly();
END
$$;

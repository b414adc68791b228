-- 0001_initial: the seed's three tables (same names and columns, more added) and the
-- engine's durable timers, action outbox, trigger ledger and dead letters.
-- Applied by `process-engine migrate` in one transaction; never edit once landed.

-- Process definitions: one row per content version of a definition file.
CREATE TABLE IF NOT EXISTS process_definitions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    name TEXT NOT NULL,
    definition JSONB NOT NULL,
    content_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (id, version),
    CONSTRAINT process_definitions_content_key UNIQUE (id, content_hash)
);

-- Process instances. `state` holds the walker's tokens (InstanceState.to_json());
-- `version` is bumped by every write, for optimistic concurrency.
-- fillfactor leaves room on each page so the frequent updates stay HOT.
CREATE TABLE IF NOT EXISTS process_instances (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    definition_id TEXT NOT NULL,
    definition_version INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (
        status IN ('running', 'completed', 'failed', 'suspended', 'cancelled')
    ),
    variables JSONB NOT NULL DEFAULT '{}',
    current_activity TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    completed_at TIMESTAMPTZ,
    state JSONB NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL DEFAULT 1,
    correlation_key TEXT,
    error TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    FOREIGN KEY (definition_id, definition_version)
        REFERENCES process_definitions (id, version)
) WITH (fillfactor = 80);

CREATE INDEX IF NOT EXISTS idx_process_instances_status
    ON process_instances (status);
CREATE INDEX IF NOT EXISTS idx_process_instances_definition
    ON process_instances (definition_id, definition_version);
CREATE INDEX IF NOT EXISTS idx_process_instances_started
    ON process_instances (started_at DESC);
-- Correlation look-ups only ever ask for live instances: keep the index small.
CREATE INDEX IF NOT EXISTS idx_process_instances_active_key
    ON process_instances (definition_id, correlation_key)
    WHERE status IN ('running', 'suspended');

-- Execution history (audit log). No foreign key to process_instances and a key that
-- includes `timestamp`: both are required for a TimescaleDB hypertable. `id` is a
-- time-ordered UUID, so rows order by time, then by insertion.
CREATE TABLE IF NOT EXISTS process_history (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    instance_id UUID NOT NULL,
    activity_id TEXT,
    event_type TEXT NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    data JSONB,
    message TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    PRIMARY KEY (timestamp, id)
);

CREATE INDEX IF NOT EXISTS idx_process_history_instance
    ON process_history (instance_id, timestamp);

-- Durable timers. A replica claims a due timer for a lease (`claimed_until`); the
-- step that handles it deletes the row, so each timer fires once.
CREATE TABLE IF NOT EXISTS process_timers (
    id TEXT PRIMARY KEY,
    instance_id UUID NOT NULL REFERENCES process_instances (id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    due_at TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS idx_process_timers_due ON process_timers (due_at);
CREATE INDEX IF NOT EXISTS idx_process_timers_claimed
    ON process_timers (claimed_until) WHERE claimed_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_process_timers_instance ON process_timers (instance_id);

-- Action outbox: written with the step that asked for the action, delivered at least
-- once afterwards. `available_at` NULL means ready now.
CREATE TABLE IF NOT EXISTS process_outbox (
    idempotency_key TEXT PRIMARY KEY,
    instance_id UUID NOT NULL REFERENCES process_instances (id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    config JSONB,
    attempt INTEGER NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    available_at TIMESTAMPTZ,
    claimed_until TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS idx_process_outbox_created ON process_outbox (created_at);
CREATE INDEX IF NOT EXISTS idx_process_outbox_instance ON process_outbox (instance_id);

-- Trigger ledger: every Kafka message that started or refreshed an instance, so a
-- redelivered message never starts a second one.
CREATE TABLE IF NOT EXISTS trigger_ledger (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    definition_id TEXT NOT NULL,
    instance_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (topic, partition, "offset", definition_id)
);

-- Messages that could not be processed: kept for inspection, then skipped.
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    reason TEXT NOT NULL,
    payload BYTEA,
    key BYTEA,
    definition_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Raised by the store's batch statements when a step's premise no longer holds
-- (stale version, timer or action already consumed), so the whole batch rolls back
-- in the same round trip. SQLSTATE PE409 is translated to ConcurrencyConflict.
CREATE OR REPLACE FUNCTION process_engine_conflict(reason TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'PE409', MESSAGE = reason;
END
$$;

-- TimescaleDB when the server has it; plain PostgreSQL skips this block.
DO $$
DECLARE
    preloaded BOOLEAN;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RETURN;
    END IF;
    -- Installed but not preloaded: CREATE EXTENSION would end the connection with a
    -- FATAL error, which no EXCEPTION clause catches. Check first and stay plain.
    BEGIN
        preloaded := EXISTS (
            SELECT 1 FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) AS lib
            WHERE btrim(lib, ' "') ~ '(^|/)timescaledb$'
        );
    EXCEPTION WHEN insufficient_privilege THEN
        -- Only superusers and pg_read_all_settings may read that list; the loader
        -- defines this setting of its own only when it was preloaded.
        preloaded := current_setting('timescaledb.disable_load', TRUE) IS NOT NULL;
    END;
    IF NOT preloaded AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE WARNING 'timescaledb is installed but not in shared_preload_libraries, so process_history '
            'stays a plain table; to use TimescaleDB add timescaledb to shared_preload_libraries in '
            'postgresql.conf, restart PostgreSQL and run SELECT process_engine_enable_timescaledb(); '
            'in this database';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN OTHERS THEN
        -- Typically: not in shared_preload_libraries. History still works unpartitioned.
        RAISE WARNING 'timescaledb is available but could not be enabled (%); '
            'process_history stays a plain table', SQLERRM;
        RETURN;
    END;
    PERFORM create_hypertable(
        'process_history'::regclass, 'timestamp'::name,
        if_not_exists => TRUE,
        migrate_data => TRUE,
        create_default_indexes => FALSE
    );
END
$$;

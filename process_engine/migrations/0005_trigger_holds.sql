-- 0005_trigger_holds: what each trigger remembers per correlation key for the telemetry
-- holds of PRODUCT.md (`for`, `count` with `within`, `cooldown`), one row per
-- (definition, key), so holds survive a restart, a rebalance and the reload of other
-- definitions. (0003 is the views migration.) Never edit once landed.
CREATE TABLE IF NOT EXISTS trigger_holds (
    definition_id TEXT NOT NULL,
    correlation_key TEXT NOT NULL,
    -- The trigger configuration the state was kept under: a changed trigger drops it.
    trigger_hash TEXT NOT NULL,
    definition_version INTEGER NOT NULL,
    -- An open `for` hold: since when, when it is complete, and the latest matching
    -- message's variables and document (what the instance starts with).
    held_since TIMESTAMPTZ,
    due_at TIMESTAMPTZ,
    variables JSONB,
    document JSONB,
    missing JSONB NOT NULL DEFAULT '[]',
    cause TEXT,
    -- `count`: the times of the latest matching messages, at most count - 1 of them.
    counts JSONB NOT NULL DEFAULT '[]',
    cooldown_until TIMESTAMPTZ,
    -- A replica completing a due hold claims it for a lease, as timers are claimed.
    claimed_until TIMESTAMPTZ,
    -- Optimistic concurrency: every write expects the version it read.
    version BIGINT NOT NULL DEFAULT 1,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (definition_id, correlation_key)
);

-- The due-hold sweep asks only for open holds.
CREATE INDEX IF NOT EXISTS idx_trigger_holds_due
    ON trigger_holds (due_at) WHERE due_at IS NOT NULL;

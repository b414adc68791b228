-- 0002_history_commit_time: when each history row was written, beside `timestamp`
-- (when the step happened by the engine's clock). clock_timestamp(), not now(): now()
-- is the transaction's start, and one transaction holds a whole Kafka batch.
ALTER TABLE process_history
    ADD COLUMN IF NOT EXISTS committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp();

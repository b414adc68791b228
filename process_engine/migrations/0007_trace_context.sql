-- 0007_trace_context: the W3C trace context of PRODUCT.md's Tracing. An instance keeps
-- its traceparent in its `state` document; its timers and outbox rows keep the one
-- they were made under, so a timer firing or an action running hours later belongs
-- to the trace that started the instance. History rows carry the trace id, so a user
-- can jump from SQL to Jaeger and back. (0006 is another change.) Never edit once landed.
ALTER TABLE process_timers ADD COLUMN IF NOT EXISTS trace_context TEXT;
ALTER TABLE process_outbox ADD COLUMN IF NOT EXISTS trace_context TEXT;
ALTER TABLE process_history ADD COLUMN IF NOT EXISTS trace_id TEXT;

-- "Which instances did this trace touch?": the way back from Jaeger to SQL.
CREATE INDEX IF NOT EXISTS idx_process_history_trace
    ON process_history (trace_id) WHERE trace_id IS NOT NULL;

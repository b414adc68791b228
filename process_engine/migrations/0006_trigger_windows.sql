-- 0006_trigger_windows: the state of windowed variables (PRODUCT.md "Windowed variables")
-- per (definition, correlation key), kept in the key's trigger_holds row so it is read
-- with the holds in the batch's one prefetch and written in the batch's own transaction,
-- beside its ledger entries: after a crash the redelivered messages were not counted.
-- A JSON object: variable name -> {"w": bucket width in ms, "b": [[bucket, count, sum,
-- min, max, first ms, first value, last ms, last value], ...]}, at most 60 buckets each.
-- Never edit once landed.
ALTER TABLE trigger_holds ADD COLUMN IF NOT EXISTS windows JSONB;

-- Every SQL statement the PostgreSQL adapter runs, as named blocks.
-- A block starts with a "-- name: NAME" line and runs to the next one.
-- Parameters are always bound (pyformat placeholders); a literal percent sign must be
-- doubled. Batch writes take one array per column and unnest them, so a whole batch
-- of steps goes to the server in a handful of statements and one round trip; history
-- and ledger rows, most of a batch, go by COPY (formatted in C) right after.

-- name: session_utc
-- Timestamps come back in UTC whatever the server's default time zone is.
SET TIME ZONE 'UTC'

-- name: ping
SELECT 1

-- name: insert_instances
INSERT INTO process_instances (
    id, definition_id, definition_version, status, variables, state,
    current_activity, correlation_key, error, started_at, completed_at, version
)
SELECT r.id, r.definition_id, r.definition_version, r.status, r.variables::jsonb,
       r.state::jsonb, r.current_activity, r.correlation_key, r.error,
       COALESCE(r.started_at, now()), r.completed_at, r.version
FROM unnest(
    %(id)b::uuid[], %(definition_id)b::text[], %(definition_version)b::int[],
    %(status)b::text[], %(variables)b::text[], %(state)b::text[],
    %(current_activity)b::text[], %(correlation_key)b::text[], %(error)b::text[],
    %(started_at)b::timestamptz[], %(completed_at)b::timestamptz[], %(version)b::bigint[]
) AS r(id, definition_id, definition_version, status, variables, state,
       current_activity, correlation_key, error, started_at, completed_at, version)

-- name: copy_instances
-- A large batch's new instances (the statement above for a few): text COPY, formatted in C.
COPY process_instances (
    id, definition_id, definition_version, status, variables, state,
    current_activity, correlation_key, error, started_at, completed_at, version
) FROM STDIN

-- name: update_instances
-- Optimistic concurrency for the whole batch in one statement: rows whose version
-- moved on are not updated, and the first of them raises a conflict (PE409).
WITH r AS (
    SELECT *
    FROM unnest(
        %(id)b::uuid[], %(expected_version)b::bigint[], %(version)b::bigint[],
        %(definition_id)b::text[], %(definition_version)b::int[], %(status)b::text[],
        %(variables)b::text[], %(state)b::text[], %(current_activity)b::text[],
        %(correlation_key)b::text[], %(error)b::text[],
        %(started_at)b::timestamptz[], %(completed_at)b::timestamptz[]
    ) AS r(id, expected_version, version, definition_id, definition_version, status,
           variables, state, current_activity, correlation_key, error,
           started_at, completed_at)
), updated AS (
    UPDATE process_instances AS i
    SET definition_id = r.definition_id,
        definition_version = r.definition_version,
        status = r.status,
        variables = r.variables::jsonb,
        state = r.state::jsonb,
        current_activity = r.current_activity,
        correlation_key = r.correlation_key,
        error = r.error,
        started_at = COALESCE(r.started_at, i.started_at),
        completed_at = r.completed_at,
        version = r.version,
        updated_at = now()
    FROM r
    WHERE i.id = r.id AND i.version = r.expected_version
    RETURNING i.id
)
SELECT process_engine_conflict(
    'instance ' || r.id || ' is no longer at version ' || r.expected_version
    || ': another writer changed or removed it; reload it and apply the event again'
)
FROM r
WHERE r.id NOT IN (SELECT id FROM updated)
LIMIT 1

-- name: consume_timers
WITH gone AS (
    DELETE FROM process_timers WHERE id = ANY(%(id)b::text[]) RETURNING id
)
SELECT process_engine_conflict(
    'timer ' || wanted.id || ' was already fired or cancelled by another writer'
)
FROM unnest(%(id)b::text[]) AS wanted(id)
WHERE wanted.id NOT IN (SELECT id FROM gone)
LIMIT 1

-- name: cancel_timers
DELETE FROM process_timers WHERE id = ANY(%(id)b::text[])

-- name: consume_actions
WITH gone AS (
    DELETE FROM process_outbox WHERE idempotency_key = ANY(%(key)b::text[])
    RETURNING idempotency_key
)
SELECT process_engine_conflict(
    'action ' || wanted.key || ' was already completed by another writer'
)
FROM unnest(%(key)b::text[]) AS wanted(key)
WHERE wanted.key NOT IN (SELECT idempotency_key FROM gone)
LIMIT 1

-- name: insert_timers
INSERT INTO process_timers (id, instance_id, token_id, activity_id, kind, due_at, trace_context)
SELECT *
FROM unnest(
    %(id)b::text[], %(instance_id)b::uuid[], %(token_id)b::text[],
    %(activity_id)b::text[], %(kind)b::text[], %(due_at)b::timestamptz[],
    %(trace_context)b::text[]
)

-- name: copy_history
-- Text COPY: the rows are formatted in C, and `data` is already JSON text.
COPY process_history (
    id, instance_id, activity_id, event_type, timestamp, data, message,
    correlation_id, causation_id, trace_id
) FROM STDIN

-- name: insert_actions
-- An idempotency key already queued stays as it is: the action runs once per key.
INSERT INTO process_outbox (
    idempotency_key, instance_id, token_id, activity_id, action, config, attempt,
    trace_context
)
SELECT r.idempotency_key, r.instance_id, r.token_id, r.activity_id, r.action,
       r.config::jsonb, r.attempt, r.trace_context
FROM unnest(
    %(idempotency_key)b::text[], %(instance_id)b::uuid[], %(token_id)b::text[],
    %(activity_id)b::text[], %(action)b::text[], %(config)b::text[], %(attempt)b::int[],
    %(trace_context)b::text[]
) AS r(idempotency_key, instance_id, token_id, activity_id, action, config, attempt,
       trace_context)
ON CONFLICT (idempotency_key) DO NOTHING

-- name: insert_history
-- A small batch's history rows (batch.batch_write): the same text COPY would send.
INSERT INTO process_history (
    id, instance_id, activity_id, event_type, timestamp, data, message,
    correlation_id, causation_id, trace_id
)
SELECT r.id::uuid, r.instance_id::uuid, r.activity_id, r.event_type, r.timestamp::timestamptz,
       r.data::jsonb, r.message, r.correlation_id, r.causation_id, r.trace_id
FROM unnest(
    %(id)b::text[], %(instance_id)b::text[], %(activity_id)b::text[], %(event_type)b::text[],
    %(timestamp)b::text[], %(data)b::text[], %(message)b::text[], %(correlation_id)b::text[],
    %(causation_id)b::text[], %(trace_id)b::text[]
) AS r(id, instance_id, activity_id, event_type, timestamp, data, message, correlation_id, causation_id, trace_id)

-- name: insert_ledger
-- A small batch's ledger entries (batch.batch_write).
INSERT INTO trigger_ledger (topic, partition, "offset", definition_id, instance_id)
SELECT r.topic, r.partition, r."offset", r.definition_id, r.instance_id::uuid
FROM unnest(%(topic)b::text[], %(partition)b::int[], %(offset)b::bigint[], %(definition_id)b::text[], %(instance_id)b::text[])
    AS r(topic, partition, "offset", definition_id, instance_id)

-- name: copy_ledger
COPY trigger_ledger (topic, partition, "offset", definition_id, instance_id) FROM STDIN

-- name: insert_dead_letters
INSERT INTO dead_letters (topic, partition, "offset", reason, payload, key, definition_id)
SELECT *
FROM unnest(
    %(topic)b::text[], %(partition)b::int[], %(offset)b::bigint[], %(reason)b::text[],
    %(payload)b::bytea[], %(key)b::bytea[], %(definition_id)b::text[]
)

-- name: load_instance
SELECT id, definition_id, definition_version, status, variables, state,
       correlation_key, started_at, completed_at, version
FROM process_instances
WHERE id = %(id)s

-- name: load_instances
SELECT id, definition_id, definition_version, status, variables, state,
       correlation_key, started_at, completed_at, version
FROM process_instances
WHERE id = ANY(%(ids)s::uuid[])

-- name: active_by_key
-- The status list matches idx_process_instances_active_key's predicate.
SELECT id, definition_id, definition_version, status, variables, state,
       correlation_key, started_at, completed_at, version
FROM process_instances
WHERE definition_id = %(definition_id)s
  AND correlation_key = %(correlation_key)s
  AND status IN ('running', 'suspended')
ORDER BY started_at, id

-- name: active_by_keys
-- active_by_key for many keys at once: one round trip for a whole batch of messages.
-- The pairs come as one JSON text ([[definition, key], ...]): dumping a Python list
-- as two text[] parameters cost more than the query for a batch of 500 messages.
SELECT i.id, i.definition_id, i.definition_version, i.status, i.variables, i.state,
       i.correlation_key, i.started_at, i.completed_at, i.version
FROM process_instances AS i
JOIN (
    SELECT DISTINCT pair->>0, pair->>1 FROM jsonb_array_elements(%(pairs)s::jsonb) AS pair
) AS k(definition_id, correlation_key)
  ON i.definition_id = k.definition_id AND i.correlation_key = k.correlation_key
WHERE i.status IN ('running', 'suspended')
ORDER BY i.started_at, i.id

-- name: active_versions_by_keys
-- active_by_keys without the JSON columns: which of the copies a consumer kept are current.
SELECT i.id::text, i.definition_id, i.correlation_key, i.version
FROM process_instances AS i
JOIN (
    SELECT DISTINCT pair->>0, pair->>1 FROM jsonb_array_elements(%(pairs)s::jsonb) AS pair
) AS k(definition_id, correlation_key)
  ON i.definition_id = k.definition_id AND i.correlation_key = k.correlation_key
WHERE i.status IN ('running', 'suspended')
ORDER BY i.started_at, i.id

-- name: find_instances
SELECT id, definition_id, definition_version, status, variables, state,
       correlation_key, started_at, completed_at, version
FROM process_instances
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(definition_id)s::text IS NULL OR definition_id = %(definition_id)s::text)
  AND (%(correlation_key)s::text IS NULL OR correlation_key = %(correlation_key)s::text)
  AND (%(trace_id)s::text IS NULL
       OR id IN (SELECT instance_id FROM process_history WHERE trace_id = %(trace_id)s::text))
ORDER BY started_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s

-- name: history
SELECT id::text AS event_id, instance_id::text AS instance_id, activity_id, event_type,
       timestamp, data, message, correlation_id, causation_id, trace_id
FROM process_history
WHERE instance_id = %(instance_id)s
ORDER BY timestamp, id

-- name: seen_messages
SELECT DISTINCT l.topic, l.partition, l."offset"
FROM trigger_ledger AS l
JOIN unnest(%(topic)b::text[], %(partition)b::int[], %(offset)b::bigint[])
    AS c(topic, partition, "offset")
  ON l.topic = c.topic AND l.partition = c.partition AND l."offset" = c."offset"

-- name: ledger_marks
-- One backward index scan per partition: the ledger's key starts with topic, partition, offset.
SELECT c.topic, c.partition,
       (SELECT l."offset" FROM trigger_ledger AS l
        WHERE l.topic = c.topic AND l.partition = c.partition
        ORDER BY l."offset" DESC LIMIT 1) AS "offset"
FROM unnest(%(topic)s::text[], %(partition)s::int[]) AS c(topic, partition)

-- name: dead_letters
SELECT topic, partition, "offset", reason, payload, key, definition_id
FROM dead_letters
ORDER BY id DESC
LIMIT %(limit)s

-- name: activity_visits
-- Instances per activity since a moment (the console's 24-hour counts): the time
-- bound lets TimescaleDB skip older chunks.
SELECT i.definition_id, h.activity_id, count(DISTINCT h.instance_id) AS instances
FROM process_history AS h
JOIN process_instances AS i ON i.id = h.instance_id
WHERE h.timestamp >= %(since)s AND h.activity_id IS NOT NULL
GROUP BY i.definition_id, h.activity_id

-- name: pending_timers
SELECT id AS timer_id, instance_id::text AS instance_id, token_id, activity_id, due_at, kind,
       trace_context
FROM process_timers
WHERE instance_id = %(instance_id)s
ORDER BY due_at, id

-- name: lock_definition
-- Serialises savers of one definition id, so two replicas never pick one version twice.
SELECT pg_advisory_xact_lock(%(namespace)s::int, hashtext(%(id)s))

-- name: definition_by_hash
SELECT id, version, name, definition, content_hash, created_at
FROM process_definitions
WHERE id = %(id)s AND content_hash = %(content_hash)s

-- name: insert_definition
INSERT INTO process_definitions (id, version, name, definition, content_hash)
SELECT %(id)s, COALESCE(max(version), 0) + 1, %(name)s, %(definition)s::jsonb,
       %(content_hash)s
FROM process_definitions
WHERE id = %(id)s
RETURNING id, version, name, definition, content_hash, created_at

-- name: load_definition
SELECT id, version, name, definition, content_hash, created_at
FROM process_definitions
WHERE id = %(id)s AND version = %(version)s

-- name: definition_versions
SELECT id, version, name, definition, content_hash, created_at
FROM process_definitions
WHERE id = %(id)s
ORDER BY version DESC

-- name: claim_timers
-- SKIP LOCKED: replicas claiming at the same moment take disjoint timers.
UPDATE process_timers AS t
SET claimed_until = %(now)s::timestamptz + make_interval(secs => %(lease)s)
WHERE t.id IN (
    SELECT id
    FROM process_timers
    WHERE due_at <= %(now)s::timestamptz
      AND (claimed_until IS NULL OR claimed_until <= %(now)s::timestamptz)
    ORDER BY due_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING t.id AS timer_id, t.instance_id::text AS instance_id, t.token_id,
          t.activity_id, t.due_at, t.kind, t.trace_context

-- name: next_timer_due
-- A claimed timer is claimable again when its lease runs out.
SELECT LEAST(
    (SELECT min(due_at) FROM process_timers WHERE claimed_until IS NULL),
    (SELECT min(claimed_until) FROM process_timers WHERE claimed_until IS NOT NULL)
) AS due

-- name: claim_actions
UPDATE process_outbox AS o
SET claimed_until = %(now)s::timestamptz + make_interval(secs => %(lease)s)
WHERE o.idempotency_key IN (
    SELECT idempotency_key
    FROM process_outbox
    WHERE (available_at IS NULL OR available_at <= %(now)s::timestamptz)
      AND (claimed_until IS NULL OR claimed_until <= %(now)s::timestamptz)
    ORDER BY created_at, idempotency_key
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING o.idempotency_key, o.instance_id::text AS instance_id, o.token_id,
          o.activity_id, o.action, o.config, o.attempt, o.created_at,
          (SELECT i.definition_id FROM process_instances AS i WHERE i.id = o.instance_id) AS definition_id,
          o.trace_context

-- name: claim_committed_actions
-- The last statement of a commit (InstanceStore.commit_prepared with a claim): the
-- rows it wrote are leased to the process that wrote them, in the same transaction,
-- so the action starts without a claim round trip. A row a replica holds stays its own
-- (the update waits for a replica's claim under way, then sees its lease).
UPDATE process_outbox AS o
SET claimed_until = %(now)s::timestamptz + make_interval(secs => %(lease)s)
WHERE o.idempotency_key = ANY(%(keys)b::text[])
  AND (o.available_at IS NULL OR o.available_at <= %(now)s::timestamptz)
  AND (o.claimed_until IS NULL OR o.claimed_until <= %(now)s::timestamptz)
RETURNING o.idempotency_key, o.instance_id::text AS instance_id, o.token_id,
          o.activity_id, o.action, o.config, o.attempt, o.created_at,
          (SELECT i.definition_id FROM process_instances AS i WHERE i.id = o.instance_id) AS definition_id,
          o.trace_context

-- name: insert_trigger_states
-- A key's first trigger state; one already there (another writer was first) is a
-- unique violation, which the commit turns into a conflict.
INSERT INTO trigger_holds (
    definition_id, correlation_key, trigger_hash, definition_version, held_since, due_at,
    variables, document, missing, cause, counts, cooldown_until, windows, version
)
SELECT r.definition_id, r.correlation_key, r.trigger_hash, r.definition_version,
       r.held_since, r.due_at, r.variables::jsonb, r.document::jsonb, r.missing::jsonb,
       r.cause, r.counts::jsonb, r.cooldown_until, r.windows::jsonb, r.version
FROM unnest(
    %(definition_id)b::text[], %(correlation_key)b::text[], %(trigger_hash)b::text[],
    %(definition_version)b::int[], %(held_since)b::timestamptz[], %(due_at)b::timestamptz[],
    %(variables)b::text[], %(document)b::text[], %(missing)b::text[], %(cause)b::text[],
    %(counts)b::text[], %(cooldown_until)b::timestamptz[], %(windows)b::text[], %(version)b::bigint[]
) AS r(definition_id, correlation_key, trigger_hash, definition_version, held_since, due_at,
       variables, document, missing, cause, counts, cooldown_until, windows, version)

-- name: update_trigger_states
-- Optimistic concurrency as for instances: a row whose version moved on (a message
-- updated the hold, or another replica completed it) raises a conflict (PE409).
-- A write ends any claim: a re-opened hold is due at its own time.
WITH r AS (
    SELECT *
    FROM unnest(
        %(definition_id)b::text[], %(correlation_key)b::text[], %(expected_version)b::bigint[],
        %(version)b::bigint[], %(trigger_hash)b::text[], %(definition_version)b::int[],
        %(held_since)b::timestamptz[], %(due_at)b::timestamptz[], %(variables)b::text[],
        %(document)b::text[], %(missing)b::text[], %(cause)b::text[], %(counts)b::text[],
        %(cooldown_until)b::timestamptz[], %(windows)b::text[]
    ) AS r(definition_id, correlation_key, expected_version, version, trigger_hash,
           definition_version, held_since, due_at, variables, document, missing, cause,
           counts, cooldown_until, windows)
), updated AS (
    UPDATE trigger_holds AS h
    SET trigger_hash = r.trigger_hash,
        definition_version = r.definition_version,
        held_since = r.held_since,
        due_at = r.due_at,
        variables = r.variables::jsonb,
        document = r.document::jsonb,
        missing = r.missing::jsonb,
        cause = r.cause,
        counts = r.counts::jsonb,
        cooldown_until = r.cooldown_until,
        windows = r.windows::jsonb,
        claimed_until = NULL,
        version = r.version,
        updated_at = now()
    FROM r
    WHERE h.definition_id = r.definition_id AND h.correlation_key = r.correlation_key
      AND h.version = r.expected_version
    RETURNING h.definition_id, h.correlation_key
)
SELECT process_engine_conflict(
    'trigger state of ' || r.definition_id || ' key ' || r.correlation_key
    || ' is no longer at version ' || r.expected_version
    || ': another writer changed or completed it; reload it and apply the message again'
)
FROM r
WHERE (r.definition_id, r.correlation_key) NOT IN (SELECT definition_id, correlation_key FROM updated)
LIMIT 1

-- name: delete_trigger_states
WITH r AS (
    SELECT *
    FROM unnest(%(definition_id)b::text[], %(correlation_key)b::text[], %(expected_version)b::bigint[])
        AS r(definition_id, correlation_key, expected_version)
), gone AS (
    DELETE FROM trigger_holds AS h
    USING r
    WHERE h.definition_id = r.definition_id AND h.correlation_key = r.correlation_key
      AND h.version = r.expected_version
    RETURNING h.definition_id, h.correlation_key
)
SELECT process_engine_conflict(
    'trigger state of ' || r.definition_id || ' key ' || r.correlation_key
    || ' is no longer at version ' || r.expected_version || ': another writer changed or completed it'
)
FROM r
WHERE (r.definition_id, r.correlation_key) NOT IN (SELECT definition_id, correlation_key FROM gone)
LIMIT 1

-- name: load_trigger_states
SELECT h.definition_id, h.correlation_key, h.trigger_hash, h.definition_version, h.held_since,
       h.due_at, h.variables, h.document, h.missing, h.cause, h.counts, h.cooldown_until, h.windows,
       h.version
FROM trigger_holds AS h
JOIN (
    SELECT DISTINCT * FROM unnest(%(definition_id)s::text[], %(correlation_key)s::text[])
) AS k(definition_id, correlation_key)
  ON h.definition_id = k.definition_id AND h.correlation_key = k.correlation_key

-- name: claim_holds
-- As claim_timers: replicas claiming at the same moment take disjoint holds. The
-- claim does not bump the version: completing the hold is what must win or lose.
UPDATE trigger_holds AS h
SET claimed_until = %(now)s::timestamptz + make_interval(secs => %(lease)s)
FROM (
    SELECT definition_id, correlation_key
    FROM trigger_holds
    WHERE due_at <= %(now)s::timestamptz
      AND (claimed_until IS NULL OR claimed_until <= %(now)s::timestamptz)
    ORDER BY due_at, definition_id, correlation_key
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS due
WHERE h.definition_id = due.definition_id AND h.correlation_key = due.correlation_key
RETURNING h.definition_id, h.correlation_key, h.trigger_hash, h.definition_version,
          h.held_since, h.due_at, h.variables, h.document, h.missing, h.cause, h.counts,
          h.cooldown_until, h.windows, h.version

-- name: next_hold_due
SELECT LEAST(
    (SELECT min(due_at) FROM trigger_holds WHERE due_at IS NOT NULL AND claimed_until IS NULL),
    (SELECT min(claimed_until) FROM trigger_holds WHERE due_at IS NOT NULL AND claimed_until IS NOT NULL)
) AS due

-- name: migrations_lock
-- Session-level: held across the per-file transactions, released at the end.
SELECT pg_advisory_lock(%(key)s::bigint)

-- name: migrations_unlock
SELECT pg_advisory_unlock(%(key)s::bigint)

-- name: migrations_ledger
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)

-- name: migrations_applied
SELECT name FROM schema_migrations

-- name: migrations_record
INSERT INTO schema_migrations (name) VALUES (%(name)s)

-- name: timescale_version
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'

-- name: timescale_hypertable
SELECT compression_enabled
FROM timescaledb_information.hypertables
WHERE hypertable_schema = current_schema() AND hypertable_name = 'process_history'

-- name: timescale_policy_interval
-- The interval an existing policy job of this kind uses, if there is one.
SELECT (config ->> %(config_key)s)::interval = %(interval)s::interval AS same
FROM timescaledb_information.jobs
WHERE proc_name = %(proc_name)s
  AND hypertable_schema = current_schema()
  AND hypertable_name = 'process_history'

-- name: timescale_remove_retention
SELECT remove_retention_policy('process_history', if_exists => TRUE)

-- name: timescale_add_retention
SELECT add_retention_policy('process_history', drop_after => %(interval)s::interval)

-- name: timescale_enable_compression
-- Segment by instance so one instance's story decompresses alone; the key columns
-- (timestamp, id) must be in segmentby/orderby for the primary key to hold.
ALTER TABLE process_history SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'instance_id',
    timescaledb.compress_orderby = '"timestamp", id'
)

-- name: timescale_remove_compression
SELECT remove_compression_policy('process_history', if_exists => TRUE)

-- name: timescale_add_compression
SELECT add_compression_policy('process_history', compress_after => %(interval)s::interval)

-- name: notify_active_keys
-- The active-key index's sync notice (adapters/postgres/active_keys.py), sent through
-- libpq itself: $1 the index's own channel, $2 the sync's number.
SELECT pg_notify($1, $2)

-- name: active_keys
-- Every (definition, key) pair with an active instance: the active-key index's load.
SELECT DISTINCT definition_id, correlation_key
FROM process_instances
WHERE status IN ('running', 'suspended') AND correlation_key IS NOT NULL

-- 0003_history_views: views for the common questions asked of the history, the same
-- on plain PostgreSQL and TimescaleDB. `process_history_hourly` is a continuous
-- aggregate (refreshed by a policy) when process_history is a hypertable, and a plain
-- view with the same columns otherwise, so dashboards work on both.
-- Every statement may run again: views are replaced, the aggregate is created once.

-- One row per finished visit of an activity. A visit ends with `completed`, `timeout`
-- (a wait), `error_path` (a service that gave up and went on to `on_error`) or `failed`,
-- and starts at the row that made the instance wait there: `timer_scheduled`,
-- `waiting`, the first `action_requested` or the first `join_waiting`. Activities that
-- never wait (start, decision, set, ...) begin and end in one step: duration 0.
CREATE OR REPLACE VIEW process_activity_visits AS
SELECT i.definition_id,
       i.definition_version,
       t.instance_id,
       t.activity_id,
       t.event_type AS outcome,
       COALESCE(entry.timestamp, t.timestamp) AS started_at,
       t.timestamp AS ended_at,
       EXTRACT(EPOCH FROM t.timestamp - COALESCE(entry.timestamp, t.timestamp))::double precision
           AS duration_seconds
FROM process_history AS t
JOIN process_instances AS i ON i.id = t.instance_id
LEFT JOIN LATERAL (
    -- The latest entry row before the end: a loop's second visit starts afresh. The
    -- plain `<=` lets the index on (instance_id, timestamp) find it; ids break ties.
    SELECT e.timestamp
    FROM process_history AS e
    WHERE e.instance_id = t.instance_id
      AND e.activity_id = t.activity_id
      AND e.timestamp <= t.timestamp
      AND (e.timestamp, e.id) < (t.timestamp, t.id)
      AND (e.event_type IN ('timer_scheduled', 'waiting')
           OR (e.event_type = 'action_requested' AND e.data ->> 'attempt' = '1')
           OR (e.event_type = 'join_waiting' AND e.data ->> 'arrived' = '1'))
    ORDER BY e.timestamp DESC, e.id DESC
    LIMIT 1
) AS entry ON TRUE
WHERE t.activity_id IS NOT NULL
  AND t.event_type IN ('completed', 'timeout', 'error_path', 'failed');

-- Per definition and activity: finished visits, how many failed, and how long they took.
CREATE OR REPLACE VIEW process_activity_stats AS
SELECT definition_id,
       activity_id,
       count(*) AS visits,
       count(*) FILTER (WHERE outcome IN ('failed', 'error_path')) AS failures,
       count(*) FILTER (WHERE outcome = 'timeout') AS timeouts,
       avg(duration_seconds) AS avg_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS p95_seconds,
       max(duration_seconds) AS max_seconds,
       max(ended_at) AS last_visit_at
FROM process_activity_visits
GROUP BY definition_id, activity_id;

-- Per instance: how long it ran. duration_seconds is NULL while it is running.
CREATE OR REPLACE VIEW process_instance_durations AS
SELECT id AS instance_id,
       definition_id,
       definition_version,
       status,
       correlation_key,
       started_at,
       completed_at,
       EXTRACT(EPOCH FROM completed_at - started_at)::double precision AS duration_seconds
FROM process_instances;

-- History rows per hour, definition, activity and event type. Real-time (materialized
-- rows plus the newest, not yet materialized ones), so a dashboard sees the last hour.
-- The refresh policy re-materializes the last two days, where late rows may land.
CREATE OR REPLACE FUNCTION process_engine_create_history_hourly() RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    hypertable BOOLEAN := FALSE;
BEGIN
    IF to_regclass('process_history_hourly') IS NOT NULL THEN
        RETURN 'exists';
    END IF;
    -- Two steps: timescaledb_information exists only with the extension.
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        hypertable := EXISTS (
            SELECT 1 FROM timescaledb_information.hypertables
            WHERE hypertable_schema = current_schema() AND hypertable_name = 'process_history'
        );
    END IF;
    IF NOT hypertable THEN
        -- date_trunc in UTC, as time_bucket does, whatever the session's time zone.
        CREATE VIEW process_history_hourly AS
        SELECT date_trunc('hour', h.timestamp, 'UTC') AS bucket,
               i.definition_id, h.activity_id, h.event_type, count(*) AS events
        FROM process_history AS h
        JOIN process_instances AS i ON i.id = h.instance_id
        GROUP BY 1, 2, 3, 4;
        RETURN 'view';
    END IF;
    -- WITH NO DATA: a continuous aggregate may be created inside a transaction only so.
    CREATE MATERIALIZED VIEW process_history_hourly
    WITH (timescaledb.continuous, timescaledb.materialized_only = FALSE) AS
    SELECT time_bucket(INTERVAL '1 hour', h.timestamp) AS bucket,
           i.definition_id, h.activity_id, h.event_type, count(*) AS events
    FROM process_history AS h
    JOIN process_instances AS i ON i.id = h.instance_id
    GROUP BY 1, 2, 3, 4
    WITH NO DATA;
    PERFORM add_continuous_aggregate_policy(
        'process_history_hourly',
        start_offset => INTERVAL '2 days',
        end_offset => INTERVAL '1 hour',
        schedule_interval => INTERVAL '30 minutes',
        if_not_exists => TRUE
    );
    RETURN 'continuous aggregate';
END
$$;

SELECT process_engine_create_history_hourly();

-- 0008_active_key_notices: every commit that makes an instance with a correlation key
-- active (a new running or suspended instance, or one brought back by a retry) tells
-- listeners which (definition, key) pairs it was, on the channel
-- process_engine_active_keys, as JSON arrays [[definition_id, key], ...] of at most
-- ~7,000 bytes each (NOTIFY's payload limit is 8,000). A pair too long for one notice
-- is sent as the single word "overflow": the listener then re-reads every active key.
-- The engine keeps an in-memory index of the keys that may have an active instance
-- from these notices, so telemetry whose key has none needs no query (PRODUCT.md
-- guarantees stay: the notices are sent by the database for every writer, and a
-- batch waits for a sync notice of its own to come back before it trusts the index).
-- Statement-level, so a batch of 500 inserts sends a few notices, not 500.
-- Never edit once landed.
CREATE OR REPLACE FUNCTION process_engine_notify_active_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pairs TEXT[];
    pair TEXT;
    payload TEXT := '';
BEGIN
    -- Two queries: an insert trigger has no `previous` table to plan against.
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT jsonb_build_array(n.definition_id, n.correlation_key)::text) INTO pairs
        FROM activated AS n
        WHERE n.correlation_key IS NOT NULL AND n.status IN ('running', 'suspended');
    ELSE
        SELECT array_agg(DISTINCT jsonb_build_array(n.definition_id, n.correlation_key)::text) INTO pairs
        FROM activated AS n JOIN previous AS o ON o.id = n.id
        WHERE n.correlation_key IS NOT NULL AND n.status IN ('running', 'suspended')
          AND NOT (o.status IN ('running', 'suspended') AND o.definition_id = n.definition_id
                   AND o.correlation_key IS NOT DISTINCT FROM n.correlation_key);
    END IF;
    FOREACH pair IN ARRAY coalesce(pairs, '{}')
    LOOP
        IF octet_length(pair) > 6900 THEN
            PERFORM pg_notify('process_engine_active_keys', 'overflow');
            CONTINUE;
        END IF;
        IF octet_length(payload) + octet_length(pair) > 6900 THEN
            PERFORM pg_notify('process_engine_active_keys', '[' || payload || ']');
            payload := '';
        END IF;
        payload := CASE WHEN payload = '' THEN pair ELSE payload || ',' || pair END;
    END LOOP;
    IF payload <> '' THEN
        PERFORM pg_notify('process_engine_active_keys', '[' || payload || ']');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS process_instances_activated_insert ON process_instances;
CREATE TRIGGER process_instances_activated_insert
    AFTER INSERT ON process_instances
    REFERENCING NEW TABLE AS activated
    FOR EACH STATEMENT EXECUTE FUNCTION process_engine_notify_active_keys();

DROP TRIGGER IF EXISTS process_instances_activated_update ON process_instances;
CREATE TRIGGER process_instances_activated_update
    AFTER UPDATE ON process_instances
    REFERENCING OLD TABLE AS previous NEW TABLE AS activated
    FOR EACH STATEMENT EXECUTE FUNCTION process_engine_notify_active_keys();

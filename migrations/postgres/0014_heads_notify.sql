-- Every statement that inserts events tells the listeners of its own channel
-- (eventstore::heads) which streams it moved and to which version, as
-- "stream version" pairs separated by commas; PostgreSQL delivers it when the
-- transaction commits. The channel is 'quoteline_heads:<oid of events>': schemas
-- sharing a database hear only their own appends, and the name stays under the
-- 64 bytes pg_notify accepts (a schema's name could be longer). A list longer than
-- a notification holds (8000 bytes) goes as '*': anything may have moved.
CREATE FUNCTION notify_heads() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved text;
BEGIN
    SELECT string_agg(stream_id::text || ' ' || version::text, ',')
      INTO moved
      FROM (SELECT stream_id, max(version) AS version
              FROM inserted_events GROUP BY stream_id) AS heads;
    IF moved IS NOT NULL THEN
        PERFORM pg_notify('quoteline_heads:' || TG_RELID::bigint::text,
                          CASE WHEN octet_length(moved) < 7900 THEN moved ELSE '*' END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_heads
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_heads();

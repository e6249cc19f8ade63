-- The heads channel is the events table's own, 'quoteline_heads:<oid of events>':
-- installations (or tests) that keep their tables in schemas of one database hear
-- only their own appends (eventstore::heads listens on the channel of the table its
-- connection finds as `events`). The table's oid, not its schema's name: a channel
-- name must stay under 64 bytes, and pg_notify refuses a longer one.
CREATE OR REPLACE FUNCTION notify_heads() RETURNS trigger LANGUAGE plpgsql AS $$
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

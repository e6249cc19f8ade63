-- The heads channel is the events table's schema's own, 'quoteline_heads:<schema>':
-- installations (or tests) that keep their tables in schemas of one database hear
-- only their own appends (eventstore::heads listens on the channel of the schema its
-- connection finds `events` in).
CREATE OR REPLACE FUNCTION notify_heads() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved text;
BEGIN
    SELECT string_agg(stream_id::text || ' ' || version::text, ',')
      INTO moved
      FROM (SELECT stream_id, max(version) AS version
              FROM inserted_events GROUP BY stream_id) AS heads;
    IF moved IS NOT NULL THEN
        PERFORM pg_notify('quoteline_heads:' || TG_TABLE_SCHEMA,
                          CASE WHEN octet_length(moved) < 7900 THEN moved ELSE '*' END);
    END IF;
    RETURN NULL;
END
$$;

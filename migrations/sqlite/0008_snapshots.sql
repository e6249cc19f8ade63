-- Snapshots: a stream's state as folded at a version, so that a load reads only the
-- events after it. A hint, never the truth: the events decide, a snapshot of another
-- schema version (the state's serialised shape) is ignored, and any snapshot can be
-- deleted at any time without losing anything.
CREATE TABLE snapshots (
    stream_id      BLOB    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    taken_at       TEXT    NOT NULL,
    PRIMARY KEY (stream_id, version)
);

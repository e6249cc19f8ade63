-- The event store: the append-only log of every domain event, and each stream's head.
-- position is the total order; one writer at a time (BEGIN IMMEDIATE) makes rowid
-- order equal commit order. AUTOINCREMENT keeps positions from ever being reused.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      BLOB    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    event_id       BLOB    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    request_id     TEXT,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE TABLE streams (
    stream_id  BLOB    PRIMARY KEY,
    version    INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);

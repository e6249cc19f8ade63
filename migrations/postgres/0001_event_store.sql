-- The event store: the append-only log of every domain event, and each stream's head.
-- Readers of the whole log take only rows whose writing transaction (tx_id) is older
-- than every transaction still running, ordered by (tx_id, position): a sequence alone
-- commits out of order and a reader that trusted it would skip events.
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id          XID8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      UUID        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_id       UUID        NOT NULL UNIQUE,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        JSONB       NOT NULL,
    actor          TEXT        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    request_id     TEXT,
    prev_hash      TEXT        NOT NULL,
    hash           TEXT        NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE INDEX events_commit_order ON events (tx_id, position);

CREATE TABLE streams (
    stream_id  UUID        PRIMARY KEY,
    version    BIGINT      NOT NULL,
    hash       TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

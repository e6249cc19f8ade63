-- audit_timeline: one row per event, kept in the append's transaction: who did it and
-- in which role, when, what it is called in the domain's words, the status before and
-- after, the reason or note, and the field-level changes against the quote's previous
-- values (a JSON list of {field, before, after}). `position` is the event's global
-- position: the auditors' log and its exports page on it, newest first, and every
-- filter has an index ending in it so that no page sorts.
CREATE TABLE audit_timeline (
    position      BIGINT      PRIMARY KEY,
    stream_id     UUID        NOT NULL,
    version       BIGINT      NOT NULL,
    event_id      UUID        NOT NULL,
    event_type    TEXT        NOT NULL,
    reference     TEXT        NOT NULL,
    actor         TEXT        NOT NULL,
    actor_role    TEXT        NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL,
    title         TEXT        NOT NULL,
    status_before TEXT,
    status_after  TEXT,
    detail        TEXT,
    changes       JSONB       NOT NULL
);
CREATE UNIQUE INDEX audit_timeline_by_stream ON audit_timeline (stream_id, version);
CREATE INDEX audit_timeline_by_reference ON audit_timeline (reference, position);
CREATE INDEX audit_timeline_by_actor ON audit_timeline (actor, position);
CREATE INDEX audit_timeline_by_type ON audit_timeline (event_type, position);

-- The last known values of each quote (the folded Quote as JSON, of schema_version),
-- so that the timeline projection diffs an append against one row read by key
-- instead of replaying the stream.
CREATE TABLE audit_quote_state (
    quote_id       UUID    PRIMARY KEY,
    reference      TEXT    NOT NULL,
    version        BIGINT  NOT NULL,
    schema_version INTEGER NOT NULL,
    state          JSONB   NOT NULL
);

-- Each run of the hash-chain verification (from the page or the command line): when,
-- by whom, what it checked and what it found. mismatches is a JSON list, capped; the
-- count is not.
CREATE TABLE verification_runs (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL,
    run_by          TEXT        NOT NULL,
    streams_checked BIGINT      NOT NULL,
    events_checked  BIGINT      NOT NULL,
    mismatch_count  BIGINT      NOT NULL,
    mismatches      JSONB       NOT NULL
);

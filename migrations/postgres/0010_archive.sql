-- Archived history (eventstore::archive): events of finished quotes moved out of
-- `events` into compressed segments in an object store. A row a segment (its
-- manifest): where it is, what it holds, the first and last position of its events in
-- commit order (commit_seq is the writing transaction's id), and its SHA-256.
CREATE TABLE archive_segments (
    segment_id     UUID        PRIMARY KEY,
    location       TEXT        NOT NULL,
    path           TEXT        NOT NULL,
    streams        BIGINT      NOT NULL,
    events         BIGINT      NOT NULL,
    bytes          BIGINT      NOT NULL,
    first_commit   BIGINT      NOT NULL,
    first_position BIGINT      NOT NULL,
    last_commit    BIGINT      NOT NULL,
    last_position  BIGINT      NOT NULL,
    sha256         TEXT        NOT NULL,
    archived_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (location, path)
);

CREATE INDEX archive_segments_by_last ON archive_segments (last_commit, last_position);

-- Each stream in a segment: the versions it holds there and the stream's last hash.
CREATE TABLE archived_streams (
    stream_id     UUID   NOT NULL,
    segment_id    UUID   NOT NULL REFERENCES archive_segments (segment_id),
    first_version BIGINT NOT NULL,
    last_version  BIGINT NOT NULL,
    last_hash     TEXT   NOT NULL,
    PRIMARY KEY (stream_id, segment_id)
);

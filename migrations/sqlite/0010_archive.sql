-- Archived history (eventstore::archive): events of finished quotes moved out of
-- `events` into compressed segments in an object store. A row a segment (its
-- manifest): where it is, what it holds, the first and last position of its events in
-- commit order (commit_seq is the position itself on SQLite), and its SHA-256.
CREATE TABLE archive_segments (
    segment_id     BLOB    PRIMARY KEY,
    location       TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    streams        INTEGER NOT NULL,
    events         INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    first_commit   INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_commit    INTEGER NOT NULL,
    last_position  INTEGER NOT NULL,
    sha256         TEXT    NOT NULL,
    archived_at    TEXT    NOT NULL,
    UNIQUE (location, path)
);

CREATE INDEX archive_segments_by_last ON archive_segments (last_commit, last_position);

-- Each stream in a segment: the versions it holds there and the stream's last hash.
CREATE TABLE archived_streams (
    stream_id     BLOB    NOT NULL,
    segment_id    BLOB    NOT NULL REFERENCES archive_segments (segment_id),
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL,
    last_hash     TEXT    NOT NULL,
    PRIMARY KEY (stream_id, segment_id)
);

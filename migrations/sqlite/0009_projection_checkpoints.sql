-- How far each projection has read the log: the global position of the last event it
-- applied, written in the same transaction as its rows. (commit_seq, position) is the
-- order of the gap-safe read; on SQLite commit_seq is the position itself.
CREATE TABLE projection_checkpoints (
    projection TEXT    PRIMARY KEY,
    commit_seq INTEGER NOT NULL,
    position   INTEGER NOT NULL
);

-- The projections kept so far were written inline with every event: all are at the
-- end of the log.
INSERT INTO projection_checkpoints (projection, commit_seq, position)
SELECT name, head.position, head.position
FROM (SELECT MAX(position) AS position FROM events) AS head,
     (SELECT 'quote_summary' AS name UNION ALL SELECT 'approval_queue'
      UNION ALL SELECT 'audit_timeline') AS projections
WHERE head.position IS NOT NULL;

-- One rebuild at a time across processes (PostgreSQL uses an advisory lock instead):
-- the row of the rebuild running, whose holder beats every few seconds; a row that has
-- not beaten for a minute is abandoned and may be taken over.
CREATE TABLE rebuild_lock (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    holder  TEXT    NOT NULL,
    beat_at TEXT    NOT NULL
);

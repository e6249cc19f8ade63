-- How far each projection has read the log: the global position of the last event it
-- applied, written in the same transaction as its rows. (commit_seq, position) is the
-- order of the gap-safe read: commit_seq is the writing transaction's id.
CREATE TABLE projection_checkpoints (
    projection TEXT   PRIMARY KEY,
    commit_seq BIGINT NOT NULL,
    position   BIGINT NOT NULL
);

-- The projections kept so far were written inline with every event: all are at the
-- end of the log.
INSERT INTO projection_checkpoints (projection, commit_seq, position)
SELECT projections.name, head.commit_seq, head.position
FROM (SELECT tx_id::text::bigint AS commit_seq, position FROM events
      ORDER BY tx_id DESC, position DESC LIMIT 1) AS head
CROSS JOIN (VALUES ('quote_summary'), ('approval_queue'), ('audit_timeline')) AS projections (name);

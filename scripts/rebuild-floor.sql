-- The floor under `quoteline rebuild` on SQLite (BENCHMARKS.md, "The floor"): what
-- SQLite itself must do for a rebuild, with every row already formed. Run it with the
-- sqlite3 shell on a copy of a database whose projections are built; it adds tables
-- and indexes named *_copy to that copy.
PRAGMA cache_size = -262144;  -- the fill's page cache (eventstore::fill)
.timer on
CREATE TABLE t_copy AS SELECT * FROM audit_timeline WHERE 0;
CREATE TABLE s_copy AS SELECT * FROM quote_summary WHERE 0;
CREATE TABLE q_copy AS SELECT * FROM approval_queue WHERE 0;
CREATE TABLE a_copy AS SELECT * FROM audit_quote_state WHERE 0;
-- Every event's payload read once.
SELECT count(*), sum(length(payload)) FROM events;
-- The rows, in key order, as the fill writes them.
BEGIN; INSERT INTO t_copy SELECT * FROM audit_timeline ORDER BY position; COMMIT;
BEGIN;
INSERT INTO s_copy SELECT * FROM quote_summary ORDER BY quote_id;
INSERT INTO q_copy SELECT * FROM approval_queue ORDER BY quote_id;
INSERT INTO a_copy SELECT * FROM audit_quote_state ORDER BY quote_id;
COMMIT;
-- The indexes the live tables have (migrations/sqlite), built over the rows at once.
CREATE INDEX t_copy_1 ON t_copy (actor, position);
CREATE UNIQUE INDEX t_copy_3 ON t_copy (stream_id, version);
CREATE INDEX t_copy_4 ON t_copy (event_type, position);
CREATE UNIQUE INDEX s_copy_1 ON s_copy (quote_id);
CREATE UNIQUE INDEX s_copy_2 ON s_copy (reference);
CREATE INDEX s_copy_3 ON s_copy (agent, last_position);
CREATE INDEX s_copy_4 ON s_copy (agent, status, last_position);
CREATE UNIQUE INDEX a_copy_1 ON a_copy (quote_id);
CREATE INDEX a_copy_2 ON a_copy (reference);
CREATE INDEX q_copy_1 ON q_copy (agent, submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX q_copy_2 ON q_copy (agent, first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX q_copy_3 ON q_copy (country, submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX q_copy_4 ON q_copy (country, first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX q_copy_5 ON q_copy (first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX q_copy_6 ON q_copy (submitted_at, quote_id) WHERE submitted_at IS NOT NULL;

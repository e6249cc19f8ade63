-- The auditors' log finds a quote's entries by reference through the quote's one
-- row in audit_quote_state and the timeline's (stream_id, version) index
-- (audit::log): the timeline's index by reference, one more page for every append
-- to write, goes. A rebuild leaves a projection's indexes under their names or
-- under `…__rebuild` (SQLite cannot rename an index), so both are dropped.
DROP INDEX IF EXISTS audit_timeline_by_reference;
DROP INDEX IF EXISTS audit_timeline_by_reference__rebuild;
CREATE INDEX audit_quote_state_by_reference ON audit_quote_state (reference);

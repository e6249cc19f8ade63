-- approval_queue: one row per live quote (started, not yet approved, rejected or
-- withdrawn), kept in the append's transaction from quoting's events alone so that
-- it can be rebuilt on its own.
--
-- A quote waits for a decision exactly when submitted_at is set: a referral back
-- clears it (and first_submitted_at), a submission sets it. Every index is partial
-- on `submitted_at IS NOT NULL`, so quotes still with their agents cost the queue's
-- indexes nothing, and a date range on submitted_at implies the predicate by
-- itself. There is no separate `waiting` flag because the planner, which takes
-- conditions to be independent, would count the waiting share twice for a date
-- range, misjudge how many rows it finds, and sort. Each sort and filter of the
-- queue page has an index in the page's order, so no first page sorts.
CREATE TABLE approval_queue (
    quote_id               UUID        PRIMARY KEY,
    reference              TEXT        NOT NULL,
    applicant_name         TEXT        NOT NULL,
    agent                  TEXT        NOT NULL,
    country                TEXT,
    region                 TEXT,
    dependents             INTEGER,
    -- While the quote waits: its last submission, and its first (referrals included).
    submitted_at           TIMESTAMPTZ,
    first_submitted_at     TIMESTAMPTZ,
    -- The first submission ever, kept while the quote is back with its agent.
    earliest_submission_at TIMESTAMPTZ,
    referral_count         INTEGER     NOT NULL DEFAULT 0,
    CHECK ((submitted_at IS NULL) = (first_submitted_at IS NULL))
);
CREATE INDEX approval_queue_by_submitted
    ON approval_queue (submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX approval_queue_by_first_submitted
    ON approval_queue (first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX approval_queue_by_country
    ON approval_queue (country, submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX approval_queue_by_country_first_submitted
    ON approval_queue (country, first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX approval_queue_by_agent
    ON approval_queue (agent, submitted_at, quote_id) WHERE submitted_at IS NOT NULL;
CREATE INDEX approval_queue_by_agent_first_submitted
    ON approval_queue (agent, first_submitted_at, quote_id) WHERE submitted_at IS NOT NULL;

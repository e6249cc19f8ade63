-- quote_summary: one row per quote, kept in the append's transaction. The agent's
-- pages (my quotes, task list) read it instead of folding events.
CREATE TABLE quote_summary (
    quote_id           BLOB    PRIMARY KEY,
    reference          TEXT    NOT NULL,
    applicant_name     TEXT    NOT NULL,
    agent              TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    geographic_done    BOOLEAN NOT NULL DEFAULT FALSE,
    contact_done       BOOLEAN NOT NULL DEFAULT FALSE,
    family_done        BOOLEAN NOT NULL DEFAULT FALSE,
    country            TEXT,
    region             TEXT,
    dependents         INTEGER,
    referral_count     INTEGER NOT NULL DEFAULT 0,
    last_referral_note TEXT,
    rejection_reason   TEXT,
    version            INTEGER NOT NULL,
    last_position      INTEGER NOT NULL,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    submitted_at       TEXT,
    CONSTRAINT quote_summary_reference_key UNIQUE (reference)
);
CREATE INDEX quote_summary_by_agent ON quote_summary (agent, last_position);
CREATE INDEX quote_summary_by_agent_status ON quote_summary (agent, status, last_position);

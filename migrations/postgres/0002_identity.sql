-- The people who can sign in. roles is a comma-separated list (agent, underwriter,
-- auditor, admin). failed_attempts counts sign-in attempts since the last success;
-- from the fifth on, locked_until says when the next attempt may be made.
CREATE TABLE users (
    id              UUID        PRIMARY KEY,
    username        TEXT        NOT NULL UNIQUE,
    password_hash   TEXT        NOT NULL,
    roles           TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    failed_attempts INTEGER     NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ
);

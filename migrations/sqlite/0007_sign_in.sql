-- Failed sign-ins, counted per (name as typed, client address) whether or not the name
-- exists: from the fifth attempt in a row, locked_until says when that name may be
-- tried again from that address. A successful sign-in deletes its row; rows whose
-- last attempt is an hour old are deleted. This replaces the count on users, which
-- let anyone lock anyone out and told which names exist.
CREATE TABLE sign_in_attempts (
    username        TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    failed_attempts INTEGER NOT NULL,
    locked_until    TEXT,
    last_attempt_at TEXT    NOT NULL,
    PRIMARY KEY (username, address)
);
CREATE INDEX sign_in_attempts_by_age ON sign_in_attempts (last_attempt_at);

ALTER TABLE users DROP COLUMN failed_attempts;
ALTER TABLE users DROP COLUMN locked_until;

-- Secret keys shared by every process on this database: 'sign_in_form' signs the
-- sign-in form's CSRF tokens, so a signed-out visitor needs no session row.
CREATE TABLE signing_keys (
    purpose TEXT PRIMARY KEY,
    secret  TEXT NOT NULL
);

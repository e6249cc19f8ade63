-- People are events now: each person has a stream of their own (PersonAdded,
-- RoleGranted, …) and users is its projection, with whether they are active and the
-- stream's version. What must never enter an event lives beside the stream in
-- credentials: the password hash, the session epoch, whether the password is a
-- one-time one to be changed at the next sign-in, and the last sign-in.
CREATE TABLE credentials (
    user_id              UUID        PRIMARY KEY,
    password_hash        TEXT        NOT NULL,
    session_epoch        BIGINT      NOT NULL DEFAULT 0,
    must_change_password BOOLEAN     NOT NULL DEFAULT FALSE,
    last_sign_in_at      TIMESTAMPTZ
);
INSERT INTO credentials (user_id, password_hash, session_epoch)
SELECT id, password_hash, session_epoch FROM users;

ALTER TABLE users DROP COLUMN password_hash;
ALTER TABLE users DROP COLUMN session_epoch;
ALTER TABLE users ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Every event so far is a quote's: the users projection has nothing to catch up.
-- (Users already here get their PersonAdded at start-up, identity::people.)
INSERT INTO projection_checkpoints (projection, commit_seq, position)
SELECT 'users', tx_id::text::bigint, position FROM events
ORDER BY tx_id DESC, position DESC LIMIT 1;

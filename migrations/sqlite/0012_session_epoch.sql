-- A person's sessions are valid while they carry the person's current epoch: changing
-- one's password moves it on, so every other session of theirs ends.
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- Jobs that run once across processes (crate::lock): a row a job ('maintenance' for
-- a rebuild or an archive run, 'publisher' for the NATS publisher), whose holder
-- beats; a row that has not beaten for a while is abandoned and may be taken over.
-- (PostgreSQL uses advisory locks instead.) It replaces rebuild_lock.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    beat_at TEXT NOT NULL
);

DROP TABLE rebuild_lock;

-- How many quotes wait for a decision, kept by the approval-queue projection in the
-- append's transaction, so the unfiltered queue page need not count its rows.
CREATE TABLE approval_queue_total (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    waiting BIGINT  NOT NULL
);
INSERT INTO approval_queue_total (id, waiting)
SELECT 1, COUNT(*) FROM approval_queue WHERE submitted_at IS NOT NULL;

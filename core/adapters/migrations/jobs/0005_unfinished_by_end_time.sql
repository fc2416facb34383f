-- jobs_unfinished was partial on state IN ('QUEUED', 'RUNNING'), which every write by id (claim,
-- record, finish, heartbeat, cancel) also states in its WHERE. A plan cached while the table was
-- empty, as when a deployment starts, could then read the whole index on every write instead of
-- the primary key: 5.5 ms a claim with 100,000 jobs queued, against 0.9 ms. A job has an
-- end_time exactly when it ended, and no write names end_time in its WHERE.
-- The index is rebuilt in this migration's transaction: writes to jobs wait while it builds.
DROP INDEX jobs_unfinished;
CREATE INDEX jobs_unfinished ON jobs (create_time, id) WHERE end_time IS NULL;

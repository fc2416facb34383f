-- Job leases: until when a running attempt holds its job, so a second claim waits instead of
-- taking over. NULL unless RUNNING; a RUNNING row from before this migration has none, so the
-- next claim takes it over as before.
ALTER TABLE jobs ADD COLUMN lease_expire_time TIMESTAMPTZ;

-- The publish outbox: false until the broker holds the job's message. Rows from before this
-- migration start unpublished: a queued one is published once more, which a claim's lease makes
-- harmless. A constant default adds the column without rewriting the table.
ALTER TABLE jobs ADD COLUMN published BOOLEAN NOT NULL DEFAULT false;

-- unpublished: the outbox sweep, oldest first. A job leaves the index once published, claimed
-- or cancelled, so it stays small.
CREATE INDEX jobs_unpublished ON jobs (create_time, id) WHERE state = 'QUEUED' AND NOT published;

-- Jobs and their numbered events. Open-shaped values (input, progress, outputs, error, event
-- payloads) are JSONB in the encoding of core/adapters/codec.py.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    input JSONB NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    attempt INTEGER NOT NULL DEFAULT 0,
    progress JSONB,
    outputs JSONB NOT NULL DEFAULT '[]',
    error JSONB,
    create_time TIMESTAMPTZ NOT NULL,
    start_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ,
    event_sequence INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    fingerprint TEXT NOT NULL,
    -- NULL request_ids are distinct: jobs without one are never merged.
    CONSTRAINT jobs_request_id_per_owner UNIQUE (owner, request_id)
)
-- Room on each page for progress updates to rewrite a row in place (HOT, no index writes).
WITH (fillfactor = 80);

-- ListJobs: an owner's jobs newest first, optionally of one state or one model.
CREATE INDEX jobs_by_owner ON jobs (owner, create_time DESC, id DESC);
CREATE INDEX jobs_by_owner_state ON jobs (owner, state, create_time DESC, id DESC);
CREATE INDEX jobs_by_owner_model ON jobs (owner, model, create_time DESC, id DESC);
-- jobs_ahead: the queue of one model; only queued jobs, so it stays small.
CREATE INDEX jobs_queued_by_model ON jobs (model, create_time, id) WHERE state = 'QUEUED';
-- unfinished: what a restart must requeue, oldest first.
CREATE INDEX jobs_unfinished ON jobs (create_time, id) WHERE state IN ('QUEUED', 'RUNNING');

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    attempt INTEGER NOT NULL,
    payload JSONB NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

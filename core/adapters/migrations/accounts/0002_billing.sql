-- Accounts, tariffs and billing (see core/billing.py and core/ports.py AccountStore).
-- Money is BIGINT micros. The ledger is append-only; each user's balance row is kept in step
-- with it in the same transaction, so a hold is one conditional UPDATE of that row.

CREATE TABLE tariffs (
    name TEXT PRIMARY KEY,
    max_concurrent_jobs INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent_jobs >= 0),
    submits_per_minute INTEGER NOT NULL DEFAULT 0 CHECK (submits_per_minute >= 0),
    update_time TIMESTAMPTZ NOT NULL
);

-- A model priced by its tariff; a model not listed costs what the catalog says.
CREATE TABLE tariff_prices (
    tariff TEXT NOT NULL REFERENCES tariffs (name) ON DELETE CASCADE,
    model TEXT NOT NULL,
    per_job_micros BIGINT NOT NULL CHECK (per_job_micros >= 0),
    per_unit_micros BIGINT NOT NULL CHECK (per_unit_micros >= 0),
    unit TEXT NOT NULL,
    PRIMARY KEY (tariff, model)
);

-- tariff NULL: the default tariff (catalog prices, no limits).
CREATE TABLE users (
    owner TEXT PRIMARY KEY,
    tariff TEXT REFERENCES tariffs (name),
    available_micros BIGINT NOT NULL DEFAULT 0 CHECK (available_micros >= 0),
    held_micros BIGINT NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
    open_holds INTEGER NOT NULL DEFAULT 0 CHECK (open_holds >= 0),
    create_time TIMESTAMPTZ NOT NULL
);

INSERT INTO users (owner, create_time) SELECT DISTINCT owner, now() FROM api_keys;

-- Scopes as space-separated names; keys from before scopes run jobs.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'jobs';
ALTER TABLE api_keys ADD COLUMN last_used_time TIMESTAMPTZ;
CREATE INDEX api_keys_by_owner ON api_keys (owner);

-- One per held job, with the price it was held at. Open while settle_time IS NULL.
CREATE TABLE holds (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (owner),
    request_id TEXT,
    model TEXT NOT NULL,
    per_job_micros BIGINT NOT NULL,
    per_unit_micros BIGINT NOT NULL,
    unit TEXT NOT NULL,
    max_units BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL CHECK (amount_micros >= 0),
    create_time TIMESTAMPTZ NOT NULL,
    settle_time TIMESTAMPTZ,
    ending TEXT,
    UNIQUE (owner, request_id)
);
-- The reconciler's scan: open holds oldest first; a hold leaves it once settled.
CREATE INDEX holds_open ON holds (create_time, job_id) WHERE settle_time IS NULL;

-- Amounts are positive; the kind says which way money moves:
-- available = TOP_UP - HOLD + RELEASE + REFUND, held = HOLD - CAPTURE - RELEASE.
-- (kind, reference) is unique: a job's entries use its id, so each is written once.
CREATE TABLE ledger (
    id BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (owner),
    kind TEXT NOT NULL CHECK (kind IN ('TOP_UP', 'HOLD', 'CAPTURE', 'RELEASE', 'REFUND')),
    amount_micros BIGINT NOT NULL CHECK (amount_micros >= 0),
    reference TEXT NOT NULL,
    job_id TEXT,
    model TEXT,
    units BIGINT NOT NULL DEFAULT 0,
    create_time TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, reference)
);
CREATE INDEX ledger_by_owner ON ledger (owner, create_time);

-- Submissions per owner and minute (epoch minutes), for the tariff's rate across replicas.
CREATE TABLE submit_counts (
    owner TEXT NOT NULL,
    minute BIGINT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (owner, minute)
);

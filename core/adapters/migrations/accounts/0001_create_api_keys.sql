-- API keys, kept only as the sha256 of their secret (see core/adapters/api_keys.py).

CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false
);

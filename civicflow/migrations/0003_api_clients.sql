-- API keys of the systems that call civicflow over gRPC (call centre, web portal, the CLI). Only the
-- SHA-256 of each key's secret is stored; the key itself is shown once, when it is created.
CREATE SCHEMA IF NOT EXISTS access;

CREATE TABLE access.api_clients (
    key_id        text PRIMARY KEY,
    name          text        NOT NULL,
    secret_sha256 text        NOT NULL,
    scopes        text[]      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- when a server last looked the key up (at most once per cache period per process)
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
-- One live key per client name, so `civicflow keys revoke NAME` means one key; revoked ones stay as history.
CREATE UNIQUE INDEX api_clients_live_name ON access.api_clients (name) WHERE revoked_at IS NULL;

-- intake: the tracking-number sequence and the idempotency keys of accepted requests.
CREATE SCHEMA IF NOT EXISTS intake;
CREATE SEQUENCE intake.tracking_sequence START 1;
CREATE TABLE intake.requests (
    idempotency_key  text PRIMARY KEY,
    request_hash     text        NOT NULL,
    case_id          uuid        NOT NULL UNIQUE,
    tracking_number  text        NOT NULL UNIQUE,
    submitted_at     timestamptz NOT NULL
);

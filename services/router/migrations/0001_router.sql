-- router: the events it has processed.
CREATE SCHEMA IF NOT EXISTS router;
CREATE TABLE router.inbox (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

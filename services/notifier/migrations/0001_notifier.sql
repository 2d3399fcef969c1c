-- notifier: the events it has processed, and its delivery log (one row per case and stage).
CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE notifier.inbox (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- A row is written as 'sending' before the SMTP hand-off and becomes 'sent' (or 'refused') in the same
-- transaction as the inbox mark and the NotificationSent/NotificationFailed event. A 'sending' row found
-- on redelivery means a crash in between: the message is resent with the same Message-ID.
CREATE TABLE notifier.deliveries (
    case_id    uuid        NOT NULL,
    stage      text        NOT NULL,
    message_id text        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('sending', 'sent', 'refused')),
    caused_by  uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    PRIMARY KEY (case_id, stage)
);

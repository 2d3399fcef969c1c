-- notifier: staff alerts. One row per alert (a case's urgent or hazard routing decision, by its event id), with
-- the short code on-call staff reply ACK <code> with, and who took it; one row per (alert, contact) written
-- 'sending' before the provider is called, keyed by the contact's number digest: no staff number in clear.
CREATE SEQUENCE notifier.staff_alert_codes START 101;

CREATE TABLE notifier.staff_alerts (
    caused_by       uuid        PRIMARY KEY,
    case_id         uuid        NOT NULL,
    tracking_number text        NOT NULL,
    department_id   text        NOT NULL,
    code            bigint      NOT NULL UNIQUE DEFAULT nextval('notifier.staff_alert_codes'),
    recorded        boolean     NOT NULL DEFAULT false,  -- StaffAlerted appended
    acknowledged_by text,
    acknowledged_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notifier.staff_alert_sends (
    caused_by      uuid        NOT NULL REFERENCES notifier.staff_alerts (caused_by),
    contact_digest text        NOT NULL,
    channel        text        NOT NULL CHECK (channel IN ('sms', 'voice')),
    status         text        NOT NULL CHECK (status IN ('sending', 'sent', 'refused')),
    body_digest    text        NOT NULL,
    provider_sid   text,
    provider_status text,     -- what the provider last said of it (delivered, undelivered…)
    provider_error integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    PRIMARY KEY (caused_by, contact_digest)
);
-- an ACK without a code takes the newest alert sent to that number
CREATE INDEX staff_alert_sends_by_contact ON notifier.staff_alert_sends (contact_digest, created_at DESC);
CREATE UNIQUE INDEX staff_alert_sends_by_provider_sid ON notifier.staff_alert_sends (provider_sid)
    WHERE provider_sid IS NOT NULL;

-- notifier: texts. A delivery is keyed by (case, stage, channel, attempt); the email path keeps channel
-- 'email', attempt 1. A text's row keeps a digest of its body, so a redelivery can find the text the
-- provider already took (texts_to) without the body, or the number, being stored.
ALTER TABLE notifier.deliveries ADD COLUMN channel text NOT NULL DEFAULT 'email';
ALTER TABLE notifier.deliveries ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE notifier.deliveries ADD COLUMN body_digest text;
ALTER TABLE notifier.deliveries ADD COLUMN provider_sid text;
-- what the provider last said of it (delivered, undelivered, failed…), from its status callbacks
ALTER TABLE notifier.deliveries ADD COLUMN provider_status text;
ALTER TABLE notifier.deliveries ADD COLUMN provider_error integer;
ALTER TABLE notifier.deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE notifier.deliveries ADD PRIMARY KEY (case_id, stage, channel, attempt);
CREATE UNIQUE INDEX deliveries_by_provider_sid ON notifier.deliveries (provider_sid) WHERE provider_sid IS NOT NULL;

-- Numbers that texted STOP, by a keyed digest (HMAC-SHA256) of the E.164 number: never in clear.
CREATE TABLE notifier.opt_outs (
    number_digest text        PRIMARY KEY,
    opted_out_at  timestamptz NOT NULL DEFAULT now()
);

-- Which cases a number has been texted about, by the same digest: how an inbound STATUS, tracking number
-- or reply finds its case without the number being kept.
CREATE TABLE notifier.case_numbers (
    number_digest   text        NOT NULL,
    case_id         uuid        NOT NULL,
    tracking_number text        NOT NULL,
    first_texted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (number_digest, case_id)
);

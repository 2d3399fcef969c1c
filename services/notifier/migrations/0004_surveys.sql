-- notifier: one satisfaction survey per resolved case. Written 'scheduled' with the CaseResolved's inbox mark;
-- the survey task claims it ('sending', claimed_at) in a transaction of its own before the provider or the
-- mail server is called, and moves it to 'sent' (or 'skipped': no way to ask any more) with SurveySent.
-- link_ref: the random reference a survey link carries (signed); the case id never appears in a link.
CREATE TABLE notifier.surveys (
    case_id      uuid        PRIMARY KEY,
    caused_by    uuid        NOT NULL,
    due_at       timestamptz NOT NULL,
    status       text        NOT NULL DEFAULT 'scheduled'
                 CHECK (status IN ('scheduled', 'sending', 'sent', 'skipped')),
    link_ref     text        NOT NULL UNIQUE,
    channel      text,
    started_at   timestamptz,  -- the first claim: what the provider is asked about after a crash
    claimed_at   timestamptz,  -- the latest claim: a row 'sending' with an old one lost its sender
    sent_at      timestamptz,
    answered_at  timestamptz,
    score        smallint    CHECK (score BETWEEN 1 AND 5)
);
CREATE INDEX surveys_due ON notifier.surveys (due_at) WHERE status IN ('scheduled', 'sending');

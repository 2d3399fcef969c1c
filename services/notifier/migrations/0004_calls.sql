-- notifier: calls. A call's delivery rows are keyed (case, stage, 'voice', attempt) like a text's. A resident
-- who pressed 2 on a resolution's call disputed it: recorded once per call, keyed by the call's sid.
CREATE TABLE notifier.disputes (
    call_sid    text        PRIMARY KEY,
    case_id     uuid        NOT NULL,
    disputed_at timestamptz NOT NULL DEFAULT now()
);

-- After a call's last attempt went unanswered, the stage's message falls back to a text, then an email: a
-- further 'voice' row whose falls_back_to says which, placed by the same periodic task as deferred calls.
ALTER TABLE notifier.deliveries ADD COLUMN falls_back_to text CHECK (falls_back_to IN ('sms', 'email'));

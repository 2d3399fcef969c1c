-- notifier: calls. A call's delivery rows are keyed (case, stage, 'voice', attempt) like a text's. A resident
-- who pressed 2 on a resolution's call disputed it: recorded once per call, keyed by the call's sid.
CREATE TABLE notifier.disputes (
    call_sid    text        PRIMARY KEY,
    case_id     uuid        NOT NULL,
    disputed_at timestamptz NOT NULL DEFAULT now()
);

-- notifier: asking the provider about a text whose final delivery report never came. The provider posts each
-- status callback once, best effort (Twilio does too), so one lost on the way (a timeout, the notifier
-- restarting) would leave the row 'sent' for good. status_checked_at: when the provider was last asked about
-- the text (by the periodic task, services/notifier/status_checks.py); status_checks: how often, so the wait
-- before the next ask grows (a carrier that never reports is asked less and less, then not at all).
ALTER TABLE notifier.deliveries ADD COLUMN status_checked_at timestamptz;
ALTER TABLE notifier.deliveries ADD COLUMN status_checks integer NOT NULL DEFAULT 0;
-- the texts still waiting for a final report, oldest first; the task's query repeats this predicate word for word
CREATE INDEX deliveries_awaiting_report ON notifier.deliveries (sent_at)
    WHERE status = 'sent' AND provider_sid IS NOT NULL AND (channel = 'sms' OR falls_back_to = 'sms')
    AND coalesce(provider_status, '') NOT IN ('delivered', 'failed', 'read', 'undelivered');

-- notifier: texts due in quiet hours wait as 'deferred' rows until not_before, then the notifier's periodic
-- task sends them (started_at: when it moved the row to 'sending', the moment the provider is asked from).
ALTER TABLE notifier.deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE notifier.deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('deferred', 'sending', 'sent', 'refused'));
ALTER TABLE notifier.deliveries ADD COLUMN not_before timestamptz;
ALTER TABLE notifier.deliveries ADD COLUMN started_at timestamptz;
CREATE INDEX deliveries_waiting ON notifier.deliveries (not_before) WHERE not_before IS NOT NULL AND status IN ('deferred', 'sending');

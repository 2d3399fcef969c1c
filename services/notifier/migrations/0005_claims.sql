-- notifier: who is sending a delivery row now. claimed_at is the latest claim, taken with a compare-and-set
-- before the provider or the mail server is asked (a consumer's first write of the row, a redelivery taking over
-- a row whose claim lapsed, the periodic task taking a due or stale row); a row 'sending' whose claim is older
-- than the lease lost its sender. started_at stays the first claim's: what the provider is asked about.
-- failures: how often the periodic task failed on a row (or survey), so it waits longer each time, capped,
-- instead of holding up the rows behind it.
ALTER TABLE notifier.deliveries ADD COLUMN claimed_at timestamptz;
ALTER TABLE notifier.deliveries ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE notifier.surveys ADD COLUMN failures integer NOT NULL DEFAULT 0;

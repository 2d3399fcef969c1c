-- Gap-free reading without a global write lock. Each event records the id of the transaction that wrote
-- it; whole-store readers follow (xid, position) and read only transactions older than the oldest still
-- running, so an event can never commit behind a reader's checkpoint. Rows written before this migration
-- get xid 0, which sorts before every real transaction: a reader (the relay's cursor) that stood at
-- position N continues from (0, N) through the old rows, then on to the new ones. Adding a column with
-- a constant default rewrites nothing; the default then becomes the writing transaction's id.
ALTER TABLE events.case_events ADD COLUMN xid xid8 NOT NULL DEFAULT '0'::xid8;
ALTER TABLE events.case_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX case_events_xid_position ON events.case_events (xid, position);

ALTER TABLE events.relay_cursor ADD COLUMN xid xid8 NOT NULL DEFAULT '0'::xid8;

-- Wake the relay when events commit: one notification per inserting transaction (a statement-level
-- trigger, and PostgreSQL folds identical notifications of one transaction into one), delivered at commit.
CREATE FUNCTION events.notify_case_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('civicflow_case_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER case_events_notify AFTER INSERT ON events.case_events
    FOR EACH STATEMENT EXECUTE FUNCTION events.notify_case_events();

-- workorder_bridge: reconciliation (reconcile.py). A work order with no status news for longer than its
-- department's reconcile_after_minutes is read back from their system; what was read, and when, is kept here
-- so each work order is read at most once per interval, however many bridge replicas run.
CREATE TABLE workorder_bridge.work_order_reads (
    department_id text        NOT NULL,
    external_id   text        NOT NULL,
    read_at       timestamptz NOT NULL,
    -- what the last read found: claimed (being read), unchanged, updated:<outcome>, reopened, lost, not_needed,
    -- case_unreadable; opened_again for a work order opened again (its first read is an interval later)
    outcome       text        NOT NULL,
    PRIMARY KEY (department_id, external_id),
    FOREIGN KEY (department_id, external_id) REFERENCES workorder_bridge.work_orders (department_id, external_id)
);

-- A work order their system lost and the bridge opened again under the same key (the routing event's id): the
-- id their system gave it the second time. The new row carries the same case and opened_by_event, so its
-- updates act on the case as the first one's did; one routing decision has one work order not reopened.
ALTER TABLE workorder_bridge.work_orders ADD COLUMN reopened_as text;
ALTER TABLE workorder_bridge.work_orders DROP CONSTRAINT work_orders_opened_by_event_key;
CREATE UNIQUE INDEX work_orders_opened_by_event
    ON workorder_bridge.work_orders (opened_by_event) WHERE reopened_as IS NULL;
-- the opener asks whether a routing decision's work order is known (opener.py, a decision found replaced)
CREATE INDEX work_orders_decision ON workorder_bridge.work_orders (opened_by_event);

-- A work order their system lost is done with: nothing cancels it later (their system would not know it), and
-- it is not read back again. how = lost, with the reconciliation's event as the cause.
ALTER TABLE workorder_bridge.cancelled_work_orders DROP CONSTRAINT cancelled_work_orders_how_check;
ALTER TABLE workorder_bridge.cancelled_work_orders
    ADD CONSTRAINT cancelled_work_orders_how_check CHECK (how IN ('cancelled', 'told', 'lost'));

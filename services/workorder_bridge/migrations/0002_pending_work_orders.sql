-- Routing decisions whose work order waits for a department's system to answer again. One row per
-- case: a later decision for the case replaces the one waiting. The bridge's retry task takes due rows
-- with FOR UPDATE SKIP LOCKED, so replicas share them; a row is deleted when its work order opens.
CREATE TABLE workorder_bridge.pending_work_orders (
    case_id         uuid        PRIMARY KEY,
    routed_event_id uuid        NOT NULL,
    department_id   text        NOT NULL,
    attempts        integer     NOT NULL,
    first_failed_at timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    -- what went wrong last, by kind (consumer.describe_error: never personal data)
    last_error      text        NOT NULL
);
CREATE INDEX pending_work_orders_due ON workorder_bridge.pending_work_orders (next_attempt_at);

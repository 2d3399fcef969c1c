-- workorder_bridge: what the grpc connector has for each department's own system to pull (WorkOrderSync).
-- One feed per department: work orders and cancellations in the order they were written (sequence), each
-- written once per idempotency key (a work order: the routing event's id; a cancellation: its cause), and a
-- work order cancelled at most once. The department's client acknowledges the feed up to a sequence.
CREATE TABLE workorder_bridge.grpc_feeds (
    department_id text        PRIMARY KEY,
    -- the latest sequence written; writers lock this row, so sequences are given in commit order
    latest        bigint      NOT NULL DEFAULT 0,
    acknowledged  bigint      NOT NULL DEFAULT 0,
    -- when the department's client last pulled, acknowledged or reported: its connector's health
    last_seen_at  timestamptz
);

CREATE TABLE workorder_bridge.grpc_outbox (
    department_id   text        NOT NULL REFERENCES workorder_bridge.grpc_feeds (department_id),
    sequence        bigint      NOT NULL,
    message_id      uuid        NOT NULL UNIQUE,
    kind            text        NOT NULL CHECK (kind IN ('work_order', 'cancellation')),
    idempotency_key text        NOT NULL,
    external_id     text        NOT NULL,
    body            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (department_id, sequence),
    UNIQUE (department_id, kind, idempotency_key)
);
CREATE UNIQUE INDEX grpc_outbox_work_order ON workorder_bridge.grpc_outbox (department_id, external_id)
    WHERE kind = 'work_order';
CREATE UNIQUE INDEX grpc_outbox_cancellation ON workorder_bridge.grpc_outbox (department_id, external_id)
    WHERE kind = 'cancellation';

-- workorder_bridge: the events it has processed, the work orders it opened, the status reports it recorded.
CREATE SCHEMA IF NOT EXISTS workorder_bridge;

CREATE TABLE workorder_bridge.inbox (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per work order opened in a department's system; opened_by_event (the CaseRouted event id,
-- also sent as the Idempotency-Key) makes a second work order for the same routing impossible.
CREATE TABLE workorder_bridge.work_orders (
    department_id   text        NOT NULL,
    external_id     text        NOT NULL,
    case_id         uuid        NOT NULL,
    system          text        NOT NULL,
    opened_by_event uuid        NOT NULL UNIQUE,
    -- the correlation id of the case's events, so webhook-caused events can be followed end to end
    correlation_id  uuid        NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (department_id, external_id)
);
CREATE INDEX work_orders_case ON workorder_bridge.work_orders (case_id);

-- Each (work order, status) is recorded once, however often the department redelivers its webhook.
CREATE TABLE workorder_bridge.status_updates (
    department_id text        NOT NULL,
    external_id   text        NOT NULL,
    status        text        NOT NULL,
    changed_at    timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (department_id, external_id, status),
    FOREIGN KEY (department_id, external_id) REFERENCES workorder_bridge.work_orders (department_id, external_id)
);

-- workorder_bridge: cancelling a case's earlier work orders when it moves on, each department's health, and
-- where each polled department's updates were read up to.

-- A work order cancelled in its department's system (how = cancelled), or whose department was told by its
-- channel because its system cannot cancel (how = told). The primary key is what makes it once: a second
-- cause (a redelivery, a later reroute) finds the row and leaves the work order alone.
CREATE TABLE workorder_bridge.cancelled_work_orders (
    department_id      text        NOT NULL,
    external_id        text        NOT NULL,
    case_id            uuid        NOT NULL,
    cancelled_by_event uuid        NOT NULL,
    how                text        NOT NULL CHECK (how IN ('cancelled', 'told')),
    cancelled_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (department_id, external_id)
);

-- Cancellations waiting for a department's system to answer again, retried with backoff like parked work
-- orders (FOR UPDATE SKIP LOCKED, so replicas share them); deleted when the cancellation is recorded.
CREATE TABLE workorder_bridge.pending_cancellations (
    department_id   text        NOT NULL,
    external_id     text        NOT NULL,
    case_id         uuid        NOT NULL,
    -- the event that made the work order redundant: with the external id, the idempotency key
    caused_by_event uuid        NOT NULL,
    reason          text        NOT NULL,
    attempts        integer     NOT NULL,
    first_failed_at timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    -- by kind (consumer.describe_error: never personal data)
    last_error      text        NOT NULL,
    PRIMARY KEY (department_id, external_id)
);
CREATE INDEX pending_cancellations_due ON workorder_bridge.pending_cancellations (next_attempt_at);
CREATE INDEX pending_cancellations_case ON workorder_bridge.pending_cancellations (case_id);
CREATE INDEX cancelled_work_orders_case ON workorder_bridge.cancelled_work_orders (case_id);

-- What the bridge last saw of each department's system: every open, cancel and poll, and a periodic probe.
-- `up` is what the latest of them said; last_error is by kind, never personal data.
CREATE TABLE workorder_bridge.department_health (
    department_id   text        PRIMARY KEY,
    kind            text        NOT NULL,
    up              boolean     NOT NULL,
    last_success_at timestamptz,
    last_error_at   timestamptz,
    last_error      text,
    checked_at      timestamptz NOT NULL
);

-- Where each polled department's updates were read up to (NULL: their system keeps no cursor, and each poll
-- reaches back over the catch-up window). Saved only after the page's updates are recorded.
CREATE TABLE workorder_bridge.poll_cursors (
    department_id text        PRIMARY KEY,
    cursor        text,
    polled_at     timestamptz NOT NULL
);

-- A parked work order their system opened while the case changed under the retry (its events could not be
-- appended): the id their system gave it, so it is recorded next time, or cancelled if the change replaced it.
ALTER TABLE workorder_bridge.pending_work_orders ADD COLUMN opened_external_id text;

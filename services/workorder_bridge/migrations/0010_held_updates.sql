-- workorder_bridge: status updates for work orders the bridge has not recorded yet (the department answered, then
-- the bridge stopped before it committed the work order), kept until the work order is recorded and then applied
-- in order of changed_at (updates.UpdateRecorder.apply_held). One row per update: a resend while it waits finds
-- its row (update_key: their update_id, else status and time). Bounded per department, and dropped after a week
-- (an id no work order ever gets: a misconfigured system's junk).
CREATE TABLE workorder_bridge.held_updates (
    department_id text        NOT NULL,
    external_id   text        NOT NULL,
    update_key    text        NOT NULL,
    status        text        NOT NULL,
    changed_at    timestamptz NOT NULL,
    note          text,
    update_id     text,
    refers_to     text,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (department_id, external_id, update_key)
);
CREATE INDEX held_updates_received ON workorder_bridge.held_updates (received_at);

-- An update's own id names it within its work order: some servers number updates per request (1, 2, … for each),
-- so two work orders' update 1 are two updates.
DROP INDEX IF EXISTS workorder_bridge.status_updates_update_id;
CREATE UNIQUE INDEX status_updates_update_id_per_work_order
    ON workorder_bridge.status_updates (department_id, external_id, update_id) WHERE update_id IS NOT NULL;

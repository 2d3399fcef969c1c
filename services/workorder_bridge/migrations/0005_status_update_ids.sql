-- workorder_bridge: a status update's own id, where the department's system numbers its updates (Open311
-- servicerequestupdates' update_id): a replayed update is a duplicate whatever time it now carries. The status
-- column holds the department's own word for the status (theirs), as their system sent it.
ALTER TABLE workorder_bridge.status_updates ADD COLUMN IF NOT EXISTS update_id text;
CREATE UNIQUE INDEX IF NOT EXISTS status_updates_update_id
    ON workorder_bridge.status_updates (department_id, update_id) WHERE update_id IS NOT NULL;

-- A work order can pass through the same status twice (a department reopens a job: done → in_progress
-- → done). Each report is told apart by when the change happened; a redelivered webhook carries the
-- same changed_at and is still recorded once.
ALTER TABLE workorder_bridge.status_updates DROP CONSTRAINT status_updates_pkey;
ALTER TABLE workorder_bridge.status_updates ADD PRIMARY KEY (department_id, external_id, status, changed_at);

-- workorder_bridge: a status report's note, so a resend of the latest report is told from a new note on
-- the same status ("crew scheduled" → "crew on site").
ALTER TABLE workorder_bridge.status_updates ADD COLUMN IF NOT EXISTS note text;

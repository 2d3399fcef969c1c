-- query: the department calendar's time zone, to show due dates and times as the city reads them.
ALTER TABLE query.cases ADD COLUMN IF NOT EXISTS time_zone text;

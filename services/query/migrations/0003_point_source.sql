-- query: where a case's point came from (given with the request, or geocoded from its address) and, for an
-- address that could not be placed, why; the case view says so. Cases projected before are rebuilt with it
-- by `civicflow replay query`.
ALTER TABLE query.cases ADD COLUMN IF NOT EXISTS point_source text;
ALTER TABLE query.cases ADD COLUMN IF NOT EXISTS unplaced text;

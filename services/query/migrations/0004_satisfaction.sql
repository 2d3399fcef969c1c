-- query: the resident's answer to the satisfaction survey (1 to 5), for the case view and reports. Cases
-- answered before are given it by `civicflow replay query`.
ALTER TABLE query.cases ADD COLUMN IF NOT EXISTS satisfaction smallint CHECK (satisfaction BETWEEN 1 AND 5);

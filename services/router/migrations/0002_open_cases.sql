-- router: cases it placed that are not resolved yet, to find the overdue ones.
CREATE TABLE router.open_cases (
    case_id        uuid PRIMARY KEY,
    department_id  text        NOT NULL,
    due_at         timestamptz NOT NULL,
    -- the due date for which CaseOverdue was recorded; a new due date (rerouting) can be overdue again
    overdue_for    timestamptz
);
CREATE INDEX open_cases_due ON router.open_cases (due_at) WHERE overdue_for IS NULL;

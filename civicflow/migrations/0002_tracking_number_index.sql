-- Find a case by its tracking number in the store itself (routing explains past cases by number).
CREATE UNIQUE INDEX case_events_tracking_number ON events.case_events ((data->>'tracking_number'))
    WHERE type = 'CaseSubmitted';

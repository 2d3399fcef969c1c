-- notifier: a survey per resolution, not per case. A case the resident disputed and the department resolved
-- again is asked about the resolution that stands (services/notifier/survey_delivery.py); the earlier one's
-- survey, if not yet sent, is 'skipped'. Each row is known by its link_ref (already unique).
ALTER TABLE notifier.surveys DROP CONSTRAINT surveys_pkey;
ALTER TABLE notifier.surveys ADD PRIMARY KEY (case_id, caused_by);

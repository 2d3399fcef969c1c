"""intake: takes residents' requests, validates them, issues tracking numbers, records CaseSubmitted."""

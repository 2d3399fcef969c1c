"""A local SMTP sink for development and tests: every message the notifier sends lands as an .eml file."""

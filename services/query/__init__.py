"""query: read models rebuilt from events; answers "where is my request?"."""

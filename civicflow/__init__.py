"""civicflow kernel: events, event store, relay, consumers, settings, logging and infrastructure."""

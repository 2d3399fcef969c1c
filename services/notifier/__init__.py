"""notifier: tells residents by email when their request is received, routed and resolved."""

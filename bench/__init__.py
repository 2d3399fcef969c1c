"""Benchmarks of the running civicflow system: `make bench` runs `python -m bench.submit_load`.

These measure, they never assert: the figures are for comparing runs and ratios against the floors
(what PostgreSQL and Kafka alone manage on the same machine), not for pass/fail.
"""

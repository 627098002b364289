"""Idempotency-Key middleware: a retried unsafe API call runs once and replays its first response."""

"""Transactional email: rows written in the caller's transaction, sent after commit by a worker."""

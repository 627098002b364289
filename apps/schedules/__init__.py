"""Schedules: periodic and one-off tasks stored in the database, fired exactly once by any number of beats."""

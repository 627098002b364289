"""Domain errors of schedules."""

from apps.core.errors import InvalidInput


class InvalidSchedule(InvalidInput):
    """Input whose types are right but whose meaning is not: a bad cron, an unknown zone or task, two
    cadences, end before start, a backfill range in the future. 400 with field errors; nothing is saved."""

    title, slug = "Invalid schedule", "invalid-schedule"

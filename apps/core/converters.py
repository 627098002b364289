"""URL path converters shared by every app."""


class IdConverter:
    """A positive database id that fits a 64-bit integer column, so lookups never overflow."""

    regex = "[1-9][0-9]{0,17}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)

"""Strict request parsing: the base of every write serializer and every query-parameter serializer.

DRF is lenient by default: ``"3"`` becomes 3, ``3`` becomes ``"3"``, ``"yes"`` becomes True and fields it
does not know are dropped. The API promises the opposite (docs/api.md, "Strict input"): a value of the
wrong JSON type, an unknown field, and an unknown or repeated query parameter are 400 field errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.settings import api_settings

UNKNOWN_FIELD = "unknown_field"
WRONG_TYPE = "wrong_type"
REPEATED = "repeated"
# DRF's URL_FORMAT_OVERRIDE (?format=json|api): answered by content negotiation on every view.
ALWAYS_ALLOWED_QUERY = frozenset({"format"})
_QUERY_INTEGER = re.compile(r"-?[0-9]+")
_QUERY_BOOLEANS = {"true": True, "false": False}
# Some text besides whitespace, and no NUL (PostgreSQL text cannot hold one). Stated as a pattern, not only
# checked by a validator, so the schema tells clients (and schemathesis) exactly what is accepted.
REQUIRED_TEXT_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"

# JSON types by DRF field class, most specific first; a field class not listed accepts any JSON value.
_BODY_TYPES: tuple[tuple[type[serializers.Field], str], ...] = (
    (serializers.BooleanField, "boolean"),
    (serializers.IntegerField, "integer"),
    (serializers.FloatField, "number"),
    (serializers.DecimalField, "number"),
    (serializers.CharField, "string"),
    (serializers.DateTimeField, "string"),
    (serializers.DateField, "string"),
    (serializers.TimeField, "string"),
    (serializers.DurationField, "string"),
    (serializers.UUIDField, "string"),
    (serializers.ListField, "array"),
    (serializers.ListSerializer, "array"),
    (serializers.DictField, "object"),
    (serializers.Serializer, "object"),
)


def json_type(value: Any) -> str:
    """The JSON Schema type name of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"  # as JSON Schema counts 3.0 among the integers
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _expected_type(field: serializers.Field) -> str | None:
    if isinstance(field, serializers.ChoiceField):
        return "string" if all(isinstance(choice, str) for choice in field.choices) else None
    return next((name for cls, name in _BODY_TYPES if isinstance(field, cls)), None)


def _body_type_error(field: serializers.Field, value: Any) -> Any:
    """A DRF-shaped error if ``value`` (or an item of it) has the wrong JSON type for ``field``, else None."""
    if value is None:
        return None  # allow_null decides, with DRF's own message
    expected = _expected_type(field)
    actual = json_type(value)
    if expected is not None and actual != expected and not (expected == "number" and actual == "integer"):
        return [ErrorDetail(f"Must be {_article(expected)}, not {_article(actual)}.", code=WRONG_TYPE)]
    child = getattr(field, "child", None)
    if isinstance(field, serializers.ListField) and child is not None:
        items = {index: _body_type_error(child, item) for index, item in enumerate(value)}
    elif isinstance(field, serializers.DictField) and child is not None:
        items = {name: _body_type_error(child, item) for name, item in value.items()}
    else:
        return None
    items = {key: error for key, error in items.items() if error}
    return items or None


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses unknown fields and values of the wrong JSON type instead of converting them.

    Text is taken exactly as sent: no field trims whitespace (a blank-looking value is a value).
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for field in fields.values():
            if isinstance(field, serializers.CharField):
                field.trim_whitespace = False
        return fields

    def to_internal_value(self, data: Any) -> Any:
        strict_errors = self.strict_errors(data) if isinstance(data, Mapping) else {}
        try:
            value = super().to_internal_value(data)
        except ValidationError as exc:
            if not strict_errors:
                raise
            detail = exc.detail if isinstance(exc.detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
            raise ValidationError({**detail, **strict_errors}) from exc
        if strict_errors:
            raise ValidationError(strict_errors)
        return value

    unknown_message = "Unknown field."

    def strict_errors(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Errors for names this serializer does not declare and for values of the wrong type."""
        fields = {field.field_name: field for field in self._writable_fields}
        errors: dict[str, Any] = {
            name: [ErrorDetail(self.unknown_message, code=UNKNOWN_FIELD)] for name in data if name not in fields
        }
        for name, field in fields.items():
            error = self.type_error(field, data[name]) if name in data else None
            if error:
                errors[name] = error
        return errors

    def type_error(self, field: serializers.Field, value: Any) -> Any:
        """A DRF-shaped error if ``value`` has the wrong JSON type for ``field``, else None."""
        return _body_type_error(field, value)


class StrictQuerySerializer(StrictSerializer):
    """Query parameters: only declared names (and ``format``), each at most once, values parsed strictly.

    Pass ``request.query_params`` as ``data``; integers are plain decimal digits and booleans are
    ``true`` or ``false``.
    """

    unknown_message = "Unknown query parameter."

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "getlist"):
            self._repeated = {name: [ErrorDetail("Give this parameter at most once.", code=REPEATED)]
                              for name in data if len(data.getlist(name)) > 1}
            data = {name: data.getlist(name)[-1] for name in data}
        else:
            self._repeated = {}
        return super().to_internal_value({name: value for name, value in data.items()
                                          if name not in ALWAYS_ALLOWED_QUERY})

    def strict_errors(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().strict_errors(data), **self._repeated}

    def type_error(self, field: serializers.Field, value: Any) -> Any:
        if isinstance(field, serializers.BooleanField) and value not in _QUERY_BOOLEANS:
            return [ErrorDetail("Must be true or false.", code=WRONG_TYPE)]
        if isinstance(field, serializers.IntegerField) and not _QUERY_INTEGER.fullmatch(value):
            return [ErrorDetail("Must be an integer (decimal digits).", code=WRONG_TYPE)]
        return None


def required_text_field(*, max_length: int, help_text: str) -> serializers.RegexField:
    """A required free-text field (an operator's reason or note): not blank, no NUL, bounded length."""
    return serializers.RegexField(REQUIRED_TEXT_PATTERN, max_length=max_length, help_text=help_text)

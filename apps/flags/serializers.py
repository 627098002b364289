"""Shapes of the flags API.

The serializers gate request bodies on everything JSON Schema can state, exactly as apps.flags.openapi
documents it: types (strictly: apps.core.serializers), lengths, NUL characters, number bounds, enums,
which params each rule kind takes and which values each operator compares with. What a definition means
across its fields (weights summing to 100, a window's order, a rule's variant, a compilable regex) is
checked by apps.flags.definitions.validate_definition, the one validator admin, API, command and
schedules share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from apps.core.problems import field_errors  # noqa: F401  (the flags API's name for it)
from apps.core.serializers import StrictQuerySerializer, StrictSerializer, json_type
from apps.flags.definitions import LIST_OPERATORS, NUMERIC_OPERATORS, OPERATORS, RESERVED_KEYS
from apps.flags.engine import DEFAULT, DISABLED, ERROR, SPLIT, STATIC, TARGETING_MATCH
from apps.flags.models import KEY_PATTERN, Flag, FlagRule
from apps.flags.openapi import (
    DATE_TIME_OFFSET_PATTERN,
    MAX_JSON_NUMBER,
    MAX_QUERY_REASON_LENGTH,
    MAX_REASON_LENGTH,
    REASON_PATTERN,
    SEMVER_OPERATORS,
    SEMVER_PATTERN,
)

REASONS = [STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED, ERROR]
# 50 keys of the longest kind, commas escaped, fit gunicorn's 8190-byte request line; 100 would not.
MAX_EVALUATE_KEYS = 50
_KEY = KEY_PATTERN.removeprefix("^").removesuffix("$")
EVALUATE_KEYS_PATTERN = rf"^{_KEY}(?:,{_KEY}){{0,{MAX_EVALUATE_KEYS - 1}}}$"
_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})


def storage_errors(value: Any, path: str = "") -> list[dict[str, str]]:
    """Field errors for JSON that PostgreSQL cannot store: NUL characters and numbers out of range."""
    if isinstance(value, str):
        return [] if "\x00" not in value else [_error(path, "Must not contain NUL characters.")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        in_range = math.isfinite(value) and abs(value) <= MAX_JSON_NUMBER
        return [] if in_range else [_error(path, f"Must be a finite number within ±{MAX_JSON_NUMBER}.")]
    errors: list[dict[str, str]] = []
    if isinstance(value, Mapping):
        for name, item in value.items():
            inner = f"{path}.{name}" if path else str(name)
            if "\x00" in str(name):
                errors.append(_error(path or "non_field_errors", "Names must not contain NUL characters."))
            errors += storage_errors(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += storage_errors(item, f"{path}[{index}]")
    return errors


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message, "code": "invalid"}


def _not_blank(value: str) -> None:
    if not value.strip():
        raise serializers.ValidationError("This field may not be blank.", code="blank")


def _reason(max_length: int, help_text: str) -> serializers.RegexField:
    return serializers.RegexField(REASON_PATTERN, max_length=max_length, validators=[_not_blank], help_text=help_text)


class StorableDateTimeField(serializers.DateTimeField):
    """A date-time whose UTC offset PostgreSQL can store (±15:59; RFC 3339 and Python allow ±23:59)."""

    def to_internal_value(self, value):
        if isinstance(value, str) and not re.search(DATE_TIME_OFFSET_PATTERN, value):
            raise serializers.ValidationError("Give a UTC offset from -15:59 to +15:59, or Z.", code="invalid")
        return super().to_internal_value(value)


class ConstraintSerializer(StrictSerializer):
    attribute = serializers.CharField(allow_blank=True, help_text="Context attribute, e.g. plan, country, app_version.")
    operator = serializers.ChoiceField(choices=sorted(OPERATORS))
    values = serializers.ListField(child=serializers.JSONField(), help_text="One value, or several for in/not_in.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        operator, values = attrs["operator"], attrs["values"]
        if not values:
            message = "Give a non-empty list of values."
        elif operator not in LIST_OPERATORS and len(values) != 1:
            message = f"{operator} compares with exactly one value."
        elif operator in NUMERIC_OPERATORS and json_type(values[0]) not in ("integer", "number"):
            message = f"{operator} needs a number."
        elif operator in SEMVER_OPERATORS and not (isinstance(values[0], str) and re.fullmatch(SEMVER_PATTERN,
                                                                                                  values[0])):
            message = f"{operator} needs a semantic version (e.g. 2.4.0)."
        elif operator == "regex" and not isinstance(values[0], str):
            message = "regex needs a regular expression (text)."
        elif any(json_type(value) not in _SCALAR_TYPES for value in values):
            message = "Values are text, numbers or booleans."
        else:
            return attrs
        raise serializers.ValidationError({"values": [message]})


class RuleSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=FlagRule.Kind.choices)
    params = serializers.DictField(
        child=serializers.JSONField(allow_null=True), required=False,
        help_text='users: {"user_ids": [..]}; groups: {"groups": [..]}; '
                  'percentage: {"percentage": 30, "stickiness": "user_id"}; other kinds: {}.',
    )
    constraints = ConstraintSerializer(many=True, required=False, help_text="All must hold for the rule to match.")
    variant = serializers.CharField(required=False, allow_blank=True, max_length=100,
                    help_text="Multivariate: serve this variant; empty splits by weights.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs["kind"]
        if kind == FlagRule.Kind.CONSTRAINT and not attrs.get("constraints"):
            raise serializers.ValidationError({"constraints": ["A constraint rule needs at least one constraint."]})
        errors = _params_errors(kind, attrs.get("params") or {})
        if errors:
            raise serializers.ValidationError({"params": errors})
        return attrs


def _params_errors(kind: str, params: dict[str, Any]) -> dict[str, list[str]]:
    """What is wrong with a rule's params for its kind (each kind takes its own keys, and only those)."""
    expected = {
        FlagRule.Kind.USERS: {"user_ids": True}, FlagRule.Kind.GROUPS: {"groups": True},
        FlagRule.Kind.PERCENTAGE: {"percentage": True, "stickiness": False},
    }.get(kind, {})
    errors = {name: [f"{kind} rules take no {name!r}."] for name in params if name not in expected}
    errors |= {name: ["This field is required."] for name, required in expected.items()
               if required and name not in params}
    checks = {
        "user_ids": lambda value: isinstance(value, list) and all(json_type(item) in ("integer", "string")
                                                                  for item in value),
        "groups": lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
        "percentage": lambda value: json_type(value) in ("integer", "number") and 0 <= value <= 100,
        "stickiness": lambda value: isinstance(value, str),
    }
    messages = {"user_ids": "List the user ids (integers or text) this rule serves.",
                "groups": "List the group names this rule serves.", "percentage": "Must be a number from 0 to 100.",
                "stickiness": "Must be the name of a context attribute."}
    for name in expected:
        if name in params and not checks[name](params[name]):
            errors[name] = [messages[name]]
    return errors


class VariantSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    value = serializers.JSONField(allow_null=True, help_text="String, number or JSON.")
    weight = serializers.FloatField(min_value=0, max_value=100, help_text="Weights of all variants sum to 100.")


class FlagDefinitionSerializer(StrictSerializer):
    key = serializers.RegexField(KEY_PATTERN)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    owner = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.ChoiceField(choices=Flag.Kind.choices, required=False, help_text="Default boolean.")
    enabled = serializers.BooleanField(required=False, help_text="Kill switch: off serves the default to everyone.")
    starts_at = StorableDateTimeField(required=False, allow_null=True)
    ends_at = StorableDateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True, required=False)
    default_value = serializers.JSONField(required=False, allow_null=True,
                                          help_text="Served when off or no rule matches (multivariate flags).")
    rules = RuleSerializer(many=True, required=False, help_text="Evaluated top-down; the first match decides.")

    def validate_key(self, value: str) -> str:
        if not re.fullmatch(KEY_PATTERN, value):  # RegexField's search lets "$" match before a final newline
            raise serializers.ValidationError(f"This value does not match {KEY_PATTERN}.")
        if value in RESERVED_KEYS:
            raise serializers.ValidationError(f"{value!r} is reserved (it names an API route).")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        multivariate = attrs.get("kind") == Flag.Kind.MULTIVARIATE
        if multivariate and not attrs.get("variants"):
            raise serializers.ValidationError({"variants": ["A multivariate flag needs at least one variant."]})
        if not multivariate and attrs.get("variants"):
            raise serializers.ValidationError({"variants": ["Only multivariate flags have variants."]})
        return attrs


class FlagSerializer(FlagDefinitionSerializer):
    """A stored flag: its definition and version."""

    version = serializers.IntegerField(read_only=True, help_text="Moves by one with every change of this flag.")


class ReasonSerializer(StrictSerializer):
    reason = _reason(MAX_REASON_LENGTH, "Why: recorded in the audit trail.")


class FlagWriteSerializer(FlagDefinitionSerializer, ReasonSerializer):
    """Request body of POST /api/flags/: a full definition plus the reason."""

    version = serializers.IntegerField(required=False, min_value=-MAX_JSON_NUMBER, max_value=MAX_JSON_NUMBER,
                                       help_text="Ignored: what GET answers, so it can be posted back.")


class FlagPatchSerializer(ReasonSerializer):
    """Request body of PATCH /api/flags/{key}/: the fields to change plus the reason."""

    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    owner = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.ChoiceField(choices=Flag.Kind.choices, required=False)
    enabled = serializers.BooleanField(required=False)
    starts_at = StorableDateTimeField(required=False, allow_null=True)
    ends_at = StorableDateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True, required=False)
    default_value = serializers.JSONField(required=False, allow_null=True)
    rules = RuleSerializer(many=True, required=False)
    percentage = serializers.FloatField(
        required=False, min_value=0, max_value=100,
        help_text="Sets the first percentage rule (one is appended if the flag has none).",
    )


class FlagDeleteQuerySerializer(StrictQuerySerializer):
    reason = _reason(MAX_QUERY_REASON_LENGTH,
                     'Why: recorded in the audit trail. Or send it as {"reason": ...} in a JSON body.')


class EvaluateQuerySerializer(StrictQuerySerializer):
    keys = serializers.RegexField(
        EVALUATE_KEYS_PATTERN,
        help_text=f"Comma-separated flag keys, no spaces (at most {MAX_EVALUATE_KEYS}).",
    )

    def validate_keys(self, value: str) -> list[str]:
        if not re.fullmatch(EVALUATE_KEYS_PATTERN, value):
            raise serializers.ValidationError(
                f"Name 1 to {MAX_EVALUATE_KEYS} flag keys, separated by commas, each matching {KEY_PATTERN}.")
        return list(dict.fromkeys(value.split(",")))


EVALUATION_SCHEMA = {
    "type": "object",
    "required": ["value", "variant", "reason", "error_code"],
    "properties": {
        "value": {"nullable": True, "description": "What the flag serves: a boolean, or the variant's value."},
        "variant": {"type": "string", "nullable": True},
        "reason": {"type": "string", "enum": REASONS, "description": "OpenFeature resolution reason."},
        "error_code": {"type": "string", "nullable": True, "description": "Set when reason is ERROR."},
    },
}
EVALUATIONS_SCHEMA = {
    "type": "object",
    "description": "One entry per requested key; unknown keys answer reason ERROR with FLAG_NOT_FOUND.",
    "additionalProperties": EVALUATION_SCHEMA,
}

"""Shapes of the flags API.

The serializers document the wire format and gate request bodies on types and storage limits (text
lengths, NUL characters, finite numbers). What a definition means (operators, regexes, percentages,
weights, semantic versions) is checked by apps.flags.definitions.validate_definition, the one validator
admin, API, command and schedules share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from apps.flags.definitions import OPERATORS
from apps.flags.engine import DEFAULT, DISABLED, ERROR, SPLIT, STATIC, TARGETING_MATCH
from apps.flags.models import KEY_PATTERN, Flag, FlagRule

# Kinds are documented as text, not enums: several enums on properties named "kind" (flag, rule, outbox
# message) collide in drf-spectacular's enum naming, which warns, and the schema build fails on warnings.
FLAG_KINDS = f"One of: {', '.join(Flag.Kind.values)} (default boolean)."
REASONS = [STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED, ERROR]
MAX_EVALUATE_KEYS = 100


def storage_errors(value: Any, path: str = "") -> list[dict[str, str]]:
    """Field errors for JSON that PostgreSQL cannot store: NUL characters and non-finite numbers."""
    if isinstance(value, str):
        return [] if "\x00" not in value else [_error(path, "Must not contain NUL characters.")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [_error(path, "Must be a finite number.")]
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


def field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested error detail as [{field, message, code}], with paths spelled as DefinitionError does.

    List items are ``rules[0].kind`` (DRF reports them as lists, or as dicts keyed by index) and a
    nested serializer's own errors belong to its field, not to "rules.non_field_errors".
    """
    if isinstance(detail, Mapping):
        errors: list[dict[str, str]] = []
        for name, item in detail.items():
            if name == "non_field_errors":
                path = prefix or "non_field_errors"
            elif isinstance(name, int) or str(name).isdigit():
                path = f"{prefix}[{name}]"
            else:
                path = f"{prefix}.{name}" if prefix else str(name)
            errors += field_errors(item, path)
        return errors
    if isinstance(detail, list):
        if all(not isinstance(item, Mapping | list) for item in detail):
            return [item for message in detail for item in field_errors(message, prefix)]
        return [error for index, item in enumerate(detail) for error in field_errors(item, f"{prefix}[{index}]")]
    return [{"field": prefix or "non_field_errors", "message": str(detail), "code": getattr(detail, "code", "invalid")}]


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message, "code": "invalid"}


class ConstraintSerializer(serializers.Serializer):
    attribute = serializers.CharField(help_text="Context attribute, e.g. plan, country, app_version.")
    operator = serializers.CharField(help_text=f"One of: {', '.join(sorted(OPERATORS))}.")
    values = serializers.ListField(child=serializers.JSONField(), help_text="One value, or several for in/not_in.")


class RuleSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text=f"One of: {', '.join(FlagRule.Kind.values)}.")
    params = serializers.DictField(
        child=serializers.JSONField(), required=False,
        help_text='users: {"user_ids": [..]}; groups: {"groups": [..]}; '
                  'percentage: {"percentage": 30, "stickiness": "user_id"}.',
    )
    constraints = ConstraintSerializer(many=True, required=False, help_text="All must hold for the rule to match.")
    variant = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                    help_text="Multivariate: serve this variant; empty splits by weights.")


class VariantSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    value = serializers.JSONField(help_text="String, number or JSON.")
    weight = serializers.FloatField(min_value=0, max_value=100, help_text="Weights of all variants sum to 100.")


class FlagDefinitionSerializer(serializers.Serializer):
    key = serializers.RegexField(KEY_PATTERN)
    description = serializers.CharField(required=False, allow_blank=True)
    owner = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.CharField(required=False, help_text=FLAG_KINDS)
    enabled = serializers.BooleanField(required=False, help_text="Kill switch: off serves the default to everyone.")
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True, required=False)
    default_value = serializers.JSONField(required=False, allow_null=True,
                                          help_text="Served when off or no rule matches (multivariate flags).")
    rules = RuleSerializer(many=True, required=False, help_text="Evaluated top-down; the first match decides.")


class FlagSerializer(FlagDefinitionSerializer):
    """A stored flag: its definition and version."""

    version = serializers.IntegerField(read_only=True, help_text="Moves by one with every change of this flag.")


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why: recorded in the audit trail.")


class FlagWriteSerializer(FlagDefinitionSerializer, ReasonSerializer):
    """Request body of POST /api/flags/: a full definition plus the reason."""


class FlagPatchSerializer(ReasonSerializer):
    """Request body of PATCH /api/flags/{key}/: the fields to change plus the reason."""

    description = serializers.CharField(required=False, allow_blank=True)
    owner = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.CharField(required=False, help_text=FLAG_KINDS)
    enabled = serializers.BooleanField(required=False)
    starts_at = serializers.DateTimeField(required=False, allow_null=True)
    ends_at = serializers.DateTimeField(required=False, allow_null=True)
    variants = VariantSerializer(many=True, required=False)
    default_value = serializers.JSONField(required=False, allow_null=True)
    rules = RuleSerializer(many=True, required=False)
    percentage = serializers.FloatField(
        required=False, min_value=0, max_value=100,
        help_text="Sets the first percentage rule (one is appended if the flag has none).",
    )


class EvaluateQuerySerializer(serializers.Serializer):
    keys = serializers.CharField(help_text=f"Comma-separated flag keys (at most {MAX_EVALUATE_KEYS}).")

    def validate_keys(self, value: str) -> list[str]:
        keys = list(dict.fromkeys(key.strip() for key in value.split(",") if key.strip()))
        if not keys:
            raise serializers.ValidationError("Name at least one flag key.")
        if len(keys) > MAX_EVALUATE_KEYS:
            raise serializers.ValidationError(f"At most {MAX_EVALUATE_KEYS} keys per request.")
        return keys


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

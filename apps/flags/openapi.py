"""OpenAPI schemas of flag definitions as the API accepts them.

apps.flags.serializers gates every rule JSON Schema can state (types, lengths, enums, ranges, which
params each rule kind takes, which values each operator compares with, which flags have variants);
these schemas state the same rules. What JSON Schema cannot state is checked by
apps.flags.definitions.validate_definition and answered ``invalid-flag-definition``: a window ending
before it starts, variant weights not summing to 100, duplicate variant names, a rule naming a
variant the flag does not have, a regex that does not compile, and for PATCH, the combination with
the stored definition.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent

from apps.core.serializers import REQUIRED_TEXT_PATTERN
from apps.flags.definitions import LIST_OPERATORS, NUMERIC_OPERATORS, OPERATORS, RESERVED_KEYS
from apps.flags.models import KEY_PATTERN, Flag, FlagRule

NO_NUL = "^[^\\u0000]*$"  # PostgreSQL stores no NUL character, in text or in JSON
# Numbers inside JSON values: finite, and within what a signed 64-bit integer holds.
MAX_JSON_NUMBER = 2**63 - 1
# semver.org's grammar, with ASCII digits.
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# PostgreSQL's timestamptz takes UTC offsets up to ±15:59 (RFC 3339 allows ±23:59).
DATE_TIME_OFFSET_PATTERN = r"(?:[Zz]|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$"
REASON_PATTERN = REQUIRED_TEXT_PATTERN
MAX_REASON_LENGTH = 2000
MAX_QUERY_REASON_LENGTH = 500  # 500 characters of any script still fit gunicorn's 8190-byte request line
EXAMPLE_KEY = "new-checkout"
EXAMPLE_DEFINITION = {
    "key": EXAMPLE_KEY, "description": "The new checkout flow", "enabled": True,
    "rules": [{"kind": "percentage", "params": {"percentage": 20}}], "reason": "launch to 20%",
}
SEMVER_OPERATORS = frozenset(operator for operator in OPERATORS if operator.startswith("semver_"))
SINGLE_VALUE_OPERATORS = OPERATORS - LIST_OPERATORS


def text(*, min_length: int = 0, max_length: int | None = None, pattern: str = NO_NUL, **extra: Any) -> dict:
    """A string schema; by default any text without NUL."""
    schema: dict[str, Any] = {"type": "string", "pattern": pattern, **extra}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


DATE_TIME = {"type": "string", "format": "date-time", "pattern": DATE_TIME_OFFSET_PATTERN, "nullable": True}
JSON_NUMBER = {"type": "number", "minimum": -MAX_JSON_NUMBER, "maximum": MAX_JSON_NUMBER}
JSON_SCALAR = {"anyOf": [text(), JSON_NUMBER, {"type": "boolean"}]}


def closed(properties: dict[str, Any], *, required: tuple[str, ...] = (), **extra: Any) -> dict:
    """An object schema that admits only ``properties``."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def _json_value(ref: dict) -> dict:
    return {"nullable": True, "description": "Any JSON: text without NUL, numbers within ±(2^63-1).", "anyOf": [
        text(), JSON_NUMBER, {"type": "boolean"},
        {"type": "array", "items": ref},
        {"type": "object", "additionalProperties": ref},
    ]}


def _constraint(operators: frozenset[str], values: dict) -> dict:
    return closed({
        "attribute": text(description="Context attribute, e.g. plan, country, app_version."),
        "operator": {"type": "string", "enum": sorted(operators)},
        "values": values,
    }, required=("attribute", "operator", "values"))


def _one(item: dict) -> dict:
    return {"type": "array", "items": item, "minItems": 1, "maxItems": 1}


CONSTRAINT = {"oneOf": [
    _constraint(LIST_OPERATORS, {"type": "array", "items": JSON_SCALAR, "minItems": 1,
                                 "description": "The values the attribute may (in) or may not (not_in) take."}),
    _constraint(frozenset({"equals", "not_equals"}), _one(JSON_SCALAR)),
    _constraint(frozenset({"regex"}), _one(text(description="A Python regular expression."))),
    _constraint(NUMERIC_OPERATORS, _one(JSON_NUMBER)),
    _constraint(SEMVER_OPERATORS, _one(text(pattern=SEMVER_PATTERN, description="A semantic version."))),
]}
VARIANT_NAME = text(max_length=100, description="Multivariate: serve this variant; empty splits by weights.")
CONSTRAINTS = {"type": "array", "items": CONSTRAINT, "description": "All must hold for the rule to match."}
RULE_PARAMS = {
    FlagRule.Kind.EVERYONE: closed({}),
    FlagRule.Kind.USERS: closed({"user_ids": {"type": "array", "items": {"anyOf": [
        {"type": "integer", "minimum": -MAX_JSON_NUMBER, "maximum": MAX_JSON_NUMBER}, text()]}}},
        required=("user_ids",)),
    FlagRule.Kind.GROUPS: closed({"groups": {"type": "array", "items": text()}}, required=("groups",)),
    FlagRule.Kind.CONSTRAINT: closed({}),
    FlagRule.Kind.PERCENTAGE: closed({
        "percentage": {"type": "number", "minimum": 0, "maximum": 100},
        "stickiness": text(description="The context attribute that keeps a subject in or out (user_id)."),
    }, required=("percentage",)),
}
RULE_REQUIRED = {
    FlagRule.Kind.EVERYONE: ("kind",),
    FlagRule.Kind.USERS: ("kind", "params"),
    FlagRule.Kind.GROUPS: ("kind", "params"),
    FlagRule.Kind.CONSTRAINT: ("kind", "constraints"),
    FlagRule.Kind.PERCENTAGE: ("kind", "params"),
}
RULE = {"oneOf": [
    closed({
        "kind": {"type": "string", "enum": [kind]},
        "params": params,
        "constraints": {**CONSTRAINTS, "minItems": 1} if kind == FlagRule.Kind.CONSTRAINT else CONSTRAINTS,
        "variant": VARIANT_NAME,
    }, required=RULE_REQUIRED[kind])
    for kind, params in RULE_PARAMS.items()
], "description": "Evaluated top-down; the first match decides."}
REASON = text(min_length=1, max_length=MAX_REASON_LENGTH, pattern=REASON_PATTERN,
              description="Why: recorded in the audit trail.")


def _definition_fields(value_ref: dict) -> dict[str, Any]:
    return {
        "description": text(max_length=10_000),
        "owner": text(max_length=200),
        "enabled": {"type": "boolean", "description": "Kill switch: off serves the default to everyone."},
        "starts_at": {**DATE_TIME, "description": "An RFC 3339 date-time, UTC offset within ±15:59."},
        "ends_at": {**DATE_TIME, "description": "Later than starts_at; UTC offset within ±15:59."},
        "default_value": {**value_ref, "description": "Served when off or no rule matches (multivariate flags)."},
        "rules": {"type": "array", "items": RULE},
        "reason": REASON,
    }


def _variant(value_ref: dict) -> dict:
    return closed({
        "name": text(min_length=1, max_length=100),
        "value": value_ref,
        "weight": {"type": "number", "minimum": 0, "maximum": 100,
                   "description": "The weights of a flag's variants sum to 100."},
    }, required=("name", "value", "weight"))


def flag_write_schema(value_ref: dict) -> dict:
    """POST /api/flags/: a full definition (boolean or multivariate) plus the reason."""
    key = {"type": "string", "pattern": KEY_PATTERN, "not": {"enum": sorted(RESERVED_KEYS)}}
    version = {"type": "integer", "minimum": -MAX_JSON_NUMBER, "maximum": MAX_JSON_NUMBER,
               "description": "Ignored: what GET answers, so a fetched flag can be posted back."}
    common = {"key": key, **_definition_fields(value_ref), "version": version}
    boolean = closed({
        **common,
        # Patterns, not one-value enums: drf-spectacular's enum naming gives both the same component.
        "kind": {"type": "string", "pattern": f"^{Flag.Kind.BOOLEAN}$", "description": "The default."},
        "variants": {"type": "array", "maxItems": 0, "description": "Only multivariate flags have variants."},
    }, required=("key", "reason"))
    multivariate = closed({
        **common,
        "kind": {"type": "string", "pattern": f"^{Flag.Kind.MULTIVARIATE}$"},
        "variants": {"type": "array", "items": _variant(value_ref), "minItems": 1},
    }, required=("key", "kind", "variants", "reason"))
    # "required" beside "oneOf" repeats what both branches require; it is also how drf-spectacular
    # learns that the request body itself is required.
    return {"oneOf": [boolean, multivariate], "required": ["key", "reason"], "example": EXAMPLE_DEFINITION,
            "description": __doc__.split("\n\n")[1].replace("\n", " ")}


def flag_patch_schema(value_ref: dict) -> dict:
    """PATCH /api/flags/{key}/: the fields to change plus the reason."""
    return closed({
        **_definition_fields(value_ref),
        "kind": {"type": "string", "enum": list(Flag.Kind.values)},
        "variants": {"type": "array", "items": _variant(value_ref)},
        "percentage": {"type": "number", "minimum": 0, "maximum": 100,
                       "description": "Sets the first percentage rule (one is appended if the flag has none)."},
    }, required=("reason",), minProperties=2, description="At least one field to change, and the reason.",
        example={"percentage": 50, "reason": "ramp up"})


def _json_value_ref(auto_schema) -> dict:
    component = ResolvedComponent(name="FlagJsonValue", type=ResolvedComponent.SCHEMA, object="FlagJsonValue")
    component.schema = _json_value(component.ref)
    auto_schema.registry.register_on_missing(component)
    return component.ref


class FlagWriteScheme(OpenApiSerializerExtension):
    target_class = "apps.flags.serializers.FlagWriteSerializer"
    priority = 1  # before apps.core.openapi.StrictSerializerScheme, which matches every strict serializer

    def map_serializer(self, auto_schema, direction):
        return flag_write_schema(_json_value_ref(auto_schema))


class FlagPatchScheme(OpenApiSerializerExtension):
    target_class = "apps.flags.serializers.FlagPatchSerializer"
    priority = 1

    def map_serializer(self, auto_schema, direction):
        return flag_patch_schema(_json_value_ref(auto_schema))

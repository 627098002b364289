"""A flag's definition as plain data: validated in one place for admin, API, commands and schedules."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import semver

from apps.core.errors import InvalidInput
from apps.flags.models import KEY_PATTERN, Flag, FlagRule

OPERATORS = frozenset({
    "equals", "not_equals", "in", "not_in", "regex", "gt", "gte", "lt", "lte",
    "semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte",
})
LIST_OPERATORS = frozenset({"in", "not_in"})
NUMERIC_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})
RULE_KINDS = frozenset(FlagRule.Kind.values)
RESERVED_KEYS = frozenset({"evaluate"})


class DefinitionError(InvalidInput):
    """The definition is invalid; ``errors`` lists each field problem."""

    title, slug = "Invalid flag definition", "invalid-flag-definition"


def definition_of(flag: Flag) -> dict[str, Any]:
    """The canonical definition of a stored flag (what the audit trail records)."""
    return {
        "key": flag.key, "description": flag.description, "owner": flag.owner, "kind": flag.kind,
        "enabled": flag.enabled,
        "starts_at": flag.starts_at.isoformat() if flag.starts_at else None,
        "ends_at": flag.ends_at.isoformat() if flag.ends_at else None,
        "variants": flag.variants, "default_value": flag.default_value,
        "rules": [
            {"kind": rule.kind, "params": rule.params, "constraints": rule.constraints, "variant": rule.variant}
            for rule in flag.rules.all()
        ],
    }


def validate_definition(data: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised copy of ``data`` or raise DefinitionError with every field error."""
    errors: list[dict[str, str]] = []

    def error(field: str, message: str, code: str = "invalid") -> None:
        errors.append({"field": field, "message": message, "code": code})

    if not isinstance(data, dict):
        raise DefinitionError("A flag definition is a JSON object.", errors=[
            {"field": "non_field_errors", "message": "Expected an object.", "code": "invalid"}])
    key = data.get("key")
    if not isinstance(key, str) or not re.fullmatch(KEY_PATTERN, key):
        error("key", "Use 1-100 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.")
    elif key in RESERVED_KEYS:
        error("key", f"{key!r} is reserved (it names an API route).")
    for name, limit in (("description", 10_000), ("owner", 200)):
        value = data.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            error(name, f"Must be text of at most {limit} characters.")
    bad_value = _first_unstorable(data)
    if bad_value:
        error(bad_value[0], bad_value[1])
    kind = data.get("kind", Flag.Kind.BOOLEAN)
    if not isinstance(kind, str) or kind not in Flag.Kind.values:
        error("kind", f"Must be one of {', '.join(Flag.Kind.values)}.")
    if not isinstance(data.get("enabled", False), bool):
        error("enabled", "Must be true or false.")
    window = {name: _parse_time(data.get(name), name, error) for name in ("starts_at", "ends_at")}
    if window["starts_at"] and window["ends_at"] and window["starts_at"] >= window["ends_at"]:
        error("ends_at", "Must be later than starts_at.")
    variants = data.get("variants") or []
    variant_names = _check_variants(variants, kind, error)
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        error("rules", "Must be a list.")
        rules = []
    for index, rule in enumerate(rules):
        _check_rule(rule, f"rules[{index}]", kind, variant_names, error)
    if errors:
        raise DefinitionError("The flag definition is invalid; see errors.", errors=errors)
    return {
        "key": key, "description": str(data.get("description", "")), "owner": str(data.get("owner", "")),
        "kind": kind, "enabled": data.get("enabled", False),
        "starts_at": window["starts_at"].isoformat() if window["starts_at"] else None,
        "ends_at": window["ends_at"].isoformat() if window["ends_at"] else None,
        "variants": variants if kind == Flag.Kind.MULTIVARIATE else [],
        "default_value": data.get("default_value") if kind == Flag.Kind.MULTIVARIATE else False,
        "rules": [
            {"kind": rule["kind"], "params": rule.get("params") or {}, "constraints": rule.get("constraints") or [],
             "variant": rule.get("variant") or ""}
            for rule in rules
        ],
    }


def _parse_time(value: Any, field: str, error) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            error(field, "Must be an ISO 8601 date-time.")
            return None
    if parsed.tzinfo is None:
        error(field, "Must include a time zone (e.g. 2026-12-01T09:00:00+00:00).")
        return None
    return parsed


def _check_variants(variants: Any, kind: str, error) -> set[str]:
    if kind != Flag.Kind.MULTIVARIATE:
        if variants:
            error("variants", "Only multivariate flags have variants.")
        return set()
    if not isinstance(variants, list) or not variants:
        error("variants", "A multivariate flag needs at least one variant.")
        return set()
    names: set[str] = set()
    total = 0.0
    for index, variant in enumerate(variants):
        field = f"variants[{index}]"
        if not isinstance(variant, dict) or not isinstance(variant.get("name"), str) or not variant.get("name"):
            error(field, 'Each variant needs a "name", a "value" and a "weight".')
            continue
        if len(variant["name"]) > 100:
            error(f"{field}.name", "At most 100 characters.")
        if variant["name"] in names:
            error(f"{field}.name", f"Duplicate variant name {variant['name']!r}.")
        names.add(variant["name"])
        if "value" not in variant:
            error(f"{field}.value", "Missing value (string, number or JSON).")
        weight = variant.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 100:
            error(f"{field}.weight", "Must be a number from 0 to 100.")
        else:
            total += weight
    if abs(total - 100) > 1e-9:
        error("variants", f"Weights must sum to 100 (they sum to {total:g}).")
    return names


def _check_rule(rule: Any, field: str, kind: str, variant_names: set[str], error) -> None:
    if not isinstance(rule, dict) or not isinstance(rule.get("kind"), str) or rule["kind"] not in RULE_KINDS:
        error(f"{field}.kind", f"Must be one of {', '.join(sorted(RULE_KINDS))}.")
        return
    params = rule.get("params") or {}
    if not isinstance(params, dict):
        error(f"{field}.params", "Must be an object.")
        return
    if rule["kind"] == FlagRule.Kind.USERS and not _is_list(params.get("user_ids")):
        error(f"{field}.params.user_ids", "List the user ids this rule serves.")
    if rule["kind"] == FlagRule.Kind.GROUPS and not _is_list(params.get("groups")):
        error(f"{field}.params.groups", "List the group names this rule serves.")
    if rule["kind"] == FlagRule.Kind.PERCENTAGE:
        percentage = params.get("percentage")
        if isinstance(percentage, bool) or not isinstance(percentage, int | float) or not 0 <= percentage <= 100:
            error(f"{field}.params.percentage", "Must be a number from 0 to 100.")
        if not isinstance(params.get("stickiness", "user_id"), str):
            error(f"{field}.params.stickiness", "Must be the name of a context attribute.")
    if rule["kind"] == FlagRule.Kind.CONSTRAINT and not rule.get("constraints"):
        error(f"{field}.constraints", "A constraint rule needs at least one constraint.")
    constraints = rule.get("constraints") or []
    if not isinstance(constraints, list):
        error(f"{field}.constraints", "Must be a list.")
        constraints = []
    for index, constraint in enumerate(constraints):
        _check_constraint(constraint, f"{field}.constraints[{index}]", error)
    variant = rule.get("variant") or ""
    if not isinstance(variant, str):
        error(f"{field}.variant", "Must be a variant name.")
    elif variant and (kind != Flag.Kind.MULTIVARIATE or variant not in variant_names):
        error(f"{field}.variant", f"Unknown variant {variant!r}.")


def _check_constraint(constraint: Any, field: str, error) -> None:
    if not isinstance(constraint, dict) or not isinstance(constraint.get("attribute"), str):
        error(field, 'Each constraint needs "attribute", "operator" and "values".')
        return
    operator = constraint.get("operator")
    if not isinstance(operator, str) or operator not in OPERATORS:
        error(f"{field}.operator", f"Unknown operator {operator!r}; use one of {', '.join(sorted(OPERATORS))}.")
        return
    values = constraint.get("values")
    if not _is_list(values) or not values:
        error(f"{field}.values", "Give a non-empty list of values.")
        return
    if operator not in LIST_OPERATORS and len(values) != 1:
        error(f"{field}.values", f"{operator} compares with exactly one value.")
        return
    if operator == "regex":
        try:
            re.compile(str(values[0]))
        except re.error as exc:
            error(f"{field}.values", f"Invalid regular expression: {exc}.")
    elif operator in NUMERIC_OPERATORS:
        if isinstance(values[0], bool) or not isinstance(values[0], int | float):
            error(f"{field}.values", f"{operator} needs a number.")
    elif operator.startswith("semver_"):
        try:
            semver.Version.parse(str(values[0]))
        except ValueError:
            error(f"{field}.values", f"{values[0]!r} is not a semantic version (e.g. 2.4.0).")


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _first_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """Find text with NUL characters or non-finite numbers, which PostgreSQL's JSON and text refuse."""
    if isinstance(value, str):
        return (path or "non_field_errors", "Text must not contain NUL characters.") if "\x00" in value else None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return (path or "non_field_errors", "Numbers must be finite.")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return (path or "non_field_errors", "Integers must fit in 64 bits.")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, item in items:
        child = f"{path}[{name}]" if isinstance(name, int) else (f"{path}.{name}" if path else str(name))
        found = _first_unstorable(item, child) or (_first_unstorable(name, child) if isinstance(name, str) else None)
        if found:
            return found
    return None

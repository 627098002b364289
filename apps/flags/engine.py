"""Compiling definitions into fast evaluators. Pure Python: no Django, no I/O on the hot path."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import semver

Context = Mapping[str, Any]

STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED, ERROR = (
    "STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT", "DISABLED", "ERROR",
)


class Details(NamedTuple):
    """The outcome of one evaluation, with an OpenFeature reason (a tuple: cheap to build and share)."""

    value: Any
    variant: str | None
    reason: str
    error_code: str | None = None
    rule_index: int | None = None
    explanation: tuple[str, ...] = ()


def bucket(seed: str) -> float:
    """A stable position in [0, 100) for ``seed``: the same in every process, forever."""
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _semver(value: Any) -> semver.Version | None:
    try:
        return semver.Version.parse(str(value))
    except ValueError:
        return None


def _compile_constraint(constraint: Mapping[str, Any]) -> tuple[Callable[[Context], bool], str]:
    attribute, operator, values = constraint["attribute"], constraint["operator"], constraint["values"]
    first = values[0]
    description = f"{attribute} {operator} {values if len(values) > 1 else first!r}"
    missing = object()

    def with_value(test: Callable[[Any], bool]) -> Callable[[Context], bool]:
        def check(context: Context) -> bool:
            actual = context.get(attribute, missing)
            return actual is not missing and test(actual)

        return check

    if operator == "equals":
        return with_value(lambda actual: str(actual) == str(first)), description
    if operator == "not_equals":
        return with_value(lambda actual: str(actual) != str(first)), description
    if operator in ("in", "not_in"):
        allowed = frozenset(str(value) for value in values)
        if operator == "in":
            return with_value(lambda actual: str(actual) in allowed), description
        return with_value(lambda actual: str(actual) not in allowed), description
    if operator == "regex":
        pattern = re.compile(str(first))
        return with_value(lambda actual: pattern.search(str(actual)) is not None), description
    if operator.startswith("semver_"):
        expected = semver.Version.parse(str(first))
        compare = {"eq": int.__eq__, "gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}[
            operator.removeprefix("semver_")
        ]

        def semver_check(actual: Any) -> bool:
            version = _semver(actual)
            return version is not None and compare(version.compare(expected), 0)

        return with_value(semver_check), description
    limit = float(first)
    compare_number = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}[operator]

    def numeric_check(actual: Any) -> bool:
        number = _number(actual)
        return number is not None and compare_number(number, limit)

    return with_value(numeric_check), description


@dataclass
class CompiledRule:
    kind: str
    variant: str
    conditions: list[tuple[Callable[[Context], bool], str]]
    percentage: float | None = None
    stickiness: str = "user_id"

    def matches(self, key: str, context: Context, notes: list[str] | None) -> bool:
        for condition, description in self.conditions:
            if not condition(context):
                if notes is not None:
                    notes.append(f"{description}: no")
                return False
        if self.percentage is not None:
            subject = context.get(self.stickiness)
            if subject is None:
                if notes is not None:
                    notes.append(f"percentage rule needs '{self.stickiness}' in the context")
                return False
            position = bucket(f"{key}:{subject}")
            if notes is not None:
                notes.append(f"{self.stickiness}={subject} is at {position:.2f} of 100, rollout {self.percentage:g}")
            return position < self.percentage
        return True


def _compile_rule(rule: Mapping[str, Any]) -> CompiledRule:
    params = rule.get("params") or {}
    conditions = [_compile_constraint(constraint) for constraint in rule.get("constraints") or []]
    kind = rule["kind"]
    if kind == "users":
        user_ids = frozenset(str(user_id) for user_id in params["user_ids"])
        conditions.insert(0, (lambda context: str(context.get("user_id")) in user_ids,
                              f"user_id in {sorted(user_ids)}"))
    elif kind == "groups":
        wanted = frozenset(params["groups"])
        conditions.insert(0, (lambda context: not wanted.isdisjoint(context.get("groups") or ()),
                              f"groups intersect {sorted(wanted)}"))
    compiled = CompiledRule(kind=kind, variant=rule.get("variant") or "", conditions=conditions)
    if kind == "percentage":
        compiled.percentage = float(params["percentage"])
        compiled.stickiness = params.get("stickiness") or "user_id"
    return compiled


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class CompiledFlag:
    """A flag ready to evaluate: rules compiled once per snapshot."""

    def __init__(self, definition: Mapping[str, Any]) -> None:
        self.key = definition["key"]
        self.multivariate = definition["kind"] == "multivariate"
        self.enabled = definition["enabled"]
        self.starts = _epoch(definition.get("starts_at"))
        self.ends = _epoch(definition.get("ends_at"))
        self.variants = [(v["name"], v["value"], float(v["weight"])) for v in definition.get("variants") or []]
        self.default = definition.get("default_value") if self.multivariate else False
        self.rules = [_compile_rule(rule) for rule in definition.get("rules") or []]
        self.stickiness = next((r.stickiness for r in self.rules if r.percentage is not None), "user_id")
        # Outcomes that do not depend on the subject are built once and shared by every evaluation.
        self._disabled = Details(self.default, None, DISABLED)
        self._no_match = Details(self.default, None, DEFAULT)
        self._enabled_window = not (self.starts or self.ends)

    def evaluate(self, context: Context, *, explain: bool = False) -> Details:
        if explain:
            return self._evaluate_explained(context)
        if not self.enabled or (not self._enabled_window and not self._in_window()):
            return self._disabled
        if not self.rules:
            return self._serve("", context, STATIC, None, None)
        key = self.key
        for index, rule in enumerate(self.rules):
            if rule.matches(key, context, None):
                return self._serve(rule.variant, context, SPLIT if rule.percentage is not None else TARGETING_MATCH,
                                   index, None)
        return self._no_match

    def _evaluate_explained(self, context: Context) -> Details:
        notes: list[str] = []
        if not self.enabled or (not self._enabled_window and not self._in_window()):
            notes.append("the flag is switched off" if not self.enabled else "now is outside the flag's window")
            return self._disabled._replace(explanation=tuple(notes))
        if not self.rules:
            notes.append("no rules: everyone is served")
            return self._serve("", context, STATIC, None, notes)
        for index, rule in enumerate(self.rules):
            if rule.matches(self.key, context, notes):
                notes.append(f"rule {index} ({rule.kind}) matched")
                return self._serve(rule.variant, context, SPLIT if rule.percentage is not None else TARGETING_MATCH,
                                   index, notes)
            notes.append(f"rule {index} ({rule.kind}) did not match")
        return self._no_match._replace(explanation=tuple(notes))

    def _in_window(self) -> bool:
        now = time.time()
        return (self.starts is None or now >= self.starts) and (self.ends is None or now < self.ends)

    def _serve(self, pinned: str, context: Context, reason: str, index: int | None, notes) -> Details:
        explanation = tuple(notes) if notes else ()
        if not self.multivariate:
            return Details(True, None, reason, None, index, explanation)
        if pinned:
            value = next(value for name, value, _ in self.variants if name == pinned)
            return Details(value, pinned, reason, None, index, explanation)
        subject = context.get(self.stickiness)
        if subject is None:
            explanation += (f"variant split needs '{self.stickiness}' in the context",)
            return Details(self.default, None, DEFAULT, None, index, explanation)
        position = bucket(f"{self.key}:variant:{subject}")
        cumulative = 0.0
        for name, value, weight in self.variants:
            cumulative += weight
            if position < cumulative:
                return Details(value, name, SPLIT, None, index, explanation)
        name, value, _ = self.variants[-1]
        return Details(value, name, SPLIT, None, index, explanation)

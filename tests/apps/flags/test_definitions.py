"""Invalid definitions are rejected with one error per field, and flag_save then writes nothing."""

from __future__ import annotations

import copy

import pytest

from apps.flags.definitions import DefinitionError, validate_definition
from apps.flags.models import Flag, FlagChange, FlagsVersion
from apps.flags.services import flag_save

pytestmark = pytest.mark.django_db


def constraint_rule(operator: str, *values) -> dict:
    return {"kind": "constraint", "constraints": [{"attribute": "app_version", "operator": operator,
                                                   "values": list(values)}]}


def boolean(key: str = "beta", **fields) -> dict:
    return {"key": key, "kind": "boolean", "enabled": True, "rules": [], **fields}


def multivariate(weights=(50, 50), **fields) -> dict:
    variants = [{"name": f"v{index}", "value": f"value-{index}", "weight": weight}
                for index, weight in enumerate(weights)]
    return {"key": "colour", "kind": "multivariate", "enabled": True, "variants": variants,
            "default_value": "none", "rules": [], **fields}


# (definition, the field the error names): shared with the admin, API and command tests.
INVALID_DEFINITIONS = {
    "unknown operator": (boolean(rules=[constraint_rule("resembles", "2.0.0")]),
                         "rules[0].constraints[0].operator"),
    "bad regex": (boolean(rules=[constraint_rule("regex", "([unclosed")]), "rules[0].constraints[0].values"),
    "percentage above 100": (boolean(rules=[{"kind": "percentage", "params": {"percentage": 101}}]),
                             "rules[0].params.percentage"),
    "negative percentage": (boolean(rules=[{"kind": "percentage", "params": {"percentage": -1}}]),
                            "rules[0].params.percentage"),
    "weights not summing to 100": (multivariate(weights=(50, 40)), "variants"),
    "bad semver": (boolean(rules=[constraint_rule("semver_gte", "two.zero")]), "rules[0].constraints[0].values"),
}


def invalid(name: str) -> tuple[dict, str]:
    definition, field = INVALID_DEFINITIONS[name]
    return copy.deepcopy(definition), field


@pytest.mark.parametrize("name", INVALID_DEFINITIONS)
def test_invalid_definition_names_the_field(name):
    definition, field = invalid(name)

    with pytest.raises(DefinitionError) as caught:
        validate_definition(definition)

    assert field in [error["field"] for error in caught.value.errors], caught.value.errors
    assert all(error["message"] for error in caught.value.errors)


@pytest.mark.parametrize("name", INVALID_DEFINITIONS)
def test_flag_save_of_an_invalid_definition_writes_nothing(name):
    definition, _ = invalid(name)
    version_before = FlagsVersion.objects.filter(pk=1).values_list("version", flat=True).first()

    with pytest.raises(DefinitionError):
        flag_save(definition=definition, actor="alice", reason="try it")

    assert not Flag.objects.exists()
    assert not FlagChange.objects.exists()
    assert FlagsVersion.objects.filter(pk=1).values_list("version", flat=True).first() == version_before


def test_an_invalid_replacement_leaves_the_stored_flag_untouched():
    flag_save(definition=boolean(), actor="alice", reason="launch")
    definition, _ = invalid("percentage above 100")

    with pytest.raises(DefinitionError):
        flag_save(definition=definition, actor="alice", reason="widen")

    flag = Flag.objects.get(key="beta")
    assert (flag.version, flag.rules.count()) == (1, 0)
    assert FlagChange.objects.count() == 1


def test_every_problem_is_reported_at_once():
    definition = multivariate(weights=(10, 10), rules=[constraint_rule("resembles", "x"),
                                                       {"kind": "percentage", "params": {"percentage": 300}}])

    with pytest.raises(DefinitionError) as caught:
        validate_definition(definition)

    fields = {error["field"] for error in caught.value.errors}
    assert {"variants", "rules[0].constraints[0].operator", "rules[1].params.percentage"} <= fields


def test_a_valid_definition_is_normalised():
    clean = validate_definition({"key": "beta", "enabled": True,
                                 "rules": [{"kind": "percentage", "params": {"percentage": 30}}]})

    assert clean["kind"] == "boolean"
    assert clean["rules"] == [{"kind": "percentage", "params": {"percentage": 30}, "constraints": [], "variant": ""}]

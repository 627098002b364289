"""apps.core.serializers: the strict base every write and query serializer derives from (issue 15 §0)."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from rest_framework import serializers

from apps.core.serializers import StrictQuerySerializer, StrictSerializer


class Nested(StrictSerializer):
    flag = serializers.BooleanField()


class Sample(StrictSerializer):
    count = serializers.IntegerField(required=False)
    ratio = serializers.FloatField(required=False)
    names = serializers.ListField(child=serializers.CharField(), required=False)
    nested = Nested(required=False)
    anything = serializers.JSONField(required=False)


@pytest.mark.parametrize(("data", "errors"), [
    ({"count": 1, "ratio": 2, "names": ["a"], "nested": {"flag": False}, "anything": {"x": [1]}}, {}),
    ({"ratio": "2.5"}, {"ratio": ["Must be a number, not a string."]}),
    ({"count": None}, {"count": ["This field may not be null."]}),
    ({"names": ["a", 2]}, {"names": {1: ["Must be a string, not an integer."]}}),
    ({"nested": {"flag": "true"}}, {"nested": {"flag": ["Must be a boolean, not a string."]}}),
    ({"nested": {"flag": True, "extra": 1}}, {"nested": {"extra": ["Unknown field."]}}),
])
def test_the_strict_base_checks_json_types_at_every_level(data, errors):
    serializer = Sample(data=data)

    assert serializer.is_valid() is not errors
    assert serializer.errors == errors


class Query(StrictQuerySerializer):
    size = serializers.IntegerField(required=False)
    verbose = serializers.BooleanField(required=False)


@pytest.mark.parametrize(("query", "valid"), [
    ({"size": ["10"], "verbose": ["true"]}, True),
    ({"size": ["+10"]}, False),
    ({"size": ["1e3"]}, False),
    ({"verbose": ["1"]}, False),
    ({"verbose": ["yes"]}, False),
    ({"format": ["json"]}, True),
])
def test_query_values_are_parsed_strictly(query, valid):
    data = QueryDict(mutable=True)
    for name, values in query.items():
        data.setlist(name, values)

    assert Query(data=data).is_valid() is valid

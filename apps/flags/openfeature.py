"""An OpenFeature provider, so code written against the OpenFeature API reads Taskplane flags.

    from openfeature import api
    from apps.flags.openfeature import TaskplaneProvider

    api.set_provider(TaskplaneProvider())
    api.get_client().get_boolean_value("new-checkout", False)
"""

from __future__ import annotations

from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from apps.flags.context import current_context
from apps.flags.engine import ERROR
from apps.flags.evaluation import get_details

_ERROR_CODES = {code.value: code for code in ErrorCode}


def context_from(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """Taskplane's context for an OpenFeature one: targeting_key is the user id, attributes are merged in."""
    context = dict(current_context())
    if evaluation_context is None:
        return context
    targeting_key = evaluation_context.targeting_key
    if targeting_key and str(targeting_key) != context.get("user_id"):
        # Another subject than the caller: the caller's groups and staff flag must not describe them.
        context = {}
    context.update(evaluation_context.attributes)
    if targeting_key:
        context["user_id"] = str(targeting_key)
    return context


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict | list)


class TaskplaneProvider(AbstractProvider):
    """Resolves OpenFeature evaluations from the in-process flag snapshot (no I/O per call)."""

    def get_metadata(self) -> Metadata:
        """The provider's name, as OpenFeature reports it."""
        return Metadata(name="Taskplane")

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag."""
        return self._resolve(flag_key, default_value, evaluation_context, _is_boolean)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        """Resolve a string-valued flag."""
        return self._resolve(flag_key, default_value, evaluation_context, _is_string)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        """Resolve an integer-valued flag."""
        return self._resolve(flag_key, default_value, evaluation_context, _is_integer)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        """Resolve a number-valued flag (integers are served as floats)."""
        return self._resolve(flag_key, default_value, evaluation_context, _is_number, convert=float)

    def resolve_object_details(self, flag_key: str, default_value: Any,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Any]:
        """Resolve a JSON-valued flag (object or array)."""
        return self._resolve(flag_key, default_value, evaluation_context, _is_object)

    def _resolve(self, flag_key, default_value, evaluation_context, accepts, convert=None) -> FlagResolutionDetails:
        details = get_details(flag_key, default_value, context_from(evaluation_context))
        if details.reason == ERROR:
            return FlagResolutionDetails(
                value=default_value, reason=Reason.ERROR,
                error_code=_ERROR_CODES.get(details.error_code or "", ErrorCode.GENERAL),
                error_message=details.explanation[0] if details.explanation else None,
            )
        # A multivariate flag without a default of its own serves nothing when off: the caller's default.
        value = default_value if details.value is None else details.value
        if not accepts(value):
            # The OpenFeature client would report the mismatch but hand back the wrong-typed value;
            # the spec's contract is the caller's default.
            return FlagResolutionDetails(
                value=default_value, reason=Reason.ERROR, error_code=ErrorCode.TYPE_MISMATCH,
                error_message=f"Flag {flag_key!r} serves {type(value).__name__}, not the type asked for.",
            )
        return FlagResolutionDetails(
            value=convert(value) if convert else value,
            reason=Reason(details.reason),
            variant=details.variant,
            flag_metadata={"rule_index": details.rule_index} if details.rule_index is not None else {},
        )

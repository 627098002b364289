"""Flags that code evaluates, declared in code next to the code that uses them.

An app declares its flags in its ``flags.py`` module, which the flags app imports at start-up::

    from apps.flags.declarations import declare_flag

    NEW_CHECKOUT = declare_flag("orders.new-checkout", description="Serve the new checkout.", default=False)

    if is_enabled(NEW_CHECKOUT.key): ...

A declared flag exists on every install: ``manage.py migrate`` creates each one that has no row yet
(as django-waffle's create-missing option does), audited as created by "system", and never changes
one that exists. Until then — or after an operator deletes it — it evaluates to its declared
default from the snapshot, without a "flag not found" warning.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules

from apps.flags.definitions import validate_definition
from apps.flags.engine import CompiledFlag
from apps.flags.models import Flag

logger = logging.getLogger(__name__)
SYSTEM_ACTOR = "system"
DECLARATIONS_MODULE = "flags"  # apps/<app>/flags.py

_declared: dict[str, FlagDeclaration] = {}


@dataclass(frozen=True)
class FlagDeclaration:
    """What code relies on: the flag's key, what it is for, the answer it gives when nobody changed it."""

    key: str
    description: str
    default: Any
    kind: str = Flag.Kind.BOOLEAN
    variants: tuple[dict[str, Any], ...] = ()  # multivariate: [{"name", "value", "weight"}, ...]
    owner: str = ""
    declared_in: str = field(default="", compare=False)  # the module, for messages
    compiled: CompiledFlag = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # An invalid declaration fails at start-up with the field errors, like an invalid setting.
        object.__setattr__(self, "compiled", CompiledFlag(validate_definition(self.definition())))

    def definition(self) -> dict[str, Any]:
        """The definition migrate creates: a boolean is on (for everyone) or off; a multivariate serves its default."""
        base = {"key": self.key, "description": self.description, "owner": self.owner, "kind": self.kind}
        if self.kind == Flag.Kind.MULTIVARIATE:
            return {**base, "enabled": False, "variants": list(self.variants), "default_value": self.default}
        return {**base, "enabled": self.default, "rules": []}


def declare_flag(key: str, *, description: str, default: Any, kind: str = Flag.Kind.BOOLEAN,
                 variants: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (), owner: str = "") -> FlagDeclaration:
    """Declare a flag this code evaluates; returns the declaration (use ``.key`` to evaluate it)."""
    if kind == Flag.Kind.BOOLEAN and not isinstance(default, bool):
        raise TypeError(f"Flag {key!r}: a boolean flag's default must be True or False, not {default!r}")
    caller = inspect.currentframe().f_back
    declaration = FlagDeclaration(key=key, description=description, default=default, kind=kind,
                                  variants=tuple(variants), owner=owner,
                                  declared_in=caller.f_globals.get("__name__", "") if caller else "")
    existing = _declared.get(key)
    if existing is not None and existing != declaration:
        raise ValueError(f"Flag {key!r} is declared twice, differently ({existing.declared_in} and "
                         f"{declaration.declared_in})")
    _declared[key] = declaration
    return declaration


def declared_flags() -> dict[str, FlagDeclaration]:
    """Every declared flag by key (after start-up: every app's flags.py has been imported)."""
    return dict(_declared)


def discover(app_config: AppConfig) -> None:
    """Import every app's flags.py and create missing declared flags after each migrate (from ready())."""
    autodiscover_modules(DECLARATIONS_MODULE)
    post_migrate.connect(_create_after_migrate, sender=app_config, dispatch_uid="flags.create-declared")


def _create_after_migrate(*, using: str = DEFAULT_DB_ALIAS, apps: Any = None, **_: Any) -> None:
    # migrate passes the migrated state as ``apps``; flush (which also sends post_migrate) does not.
    if using != DEFAULT_DB_ALIAS:
        return  # flags live in the default database, where the services write
    if apps is not None:
        try:
            apps.get_model("flags", "Flag")
        except LookupError:
            return  # the flags tables are not there (e.g. `migrate flags zero`)
    from apps.flags.services import declared_flags_create

    created = declared_flags_create()
    if created:
        logger.info("Created declared flag(s) %s", ", ".join(created))


# The flags app's own switch: beat applies scheduled flag changes while it is on (workers/tasks/flags.py).
SCHEDULED_CHANGES = declare_flag(
    "flags.scheduled-changes", default=True, owner="platform",
    description="Scheduled flag changes are applied while this is on; switch it off to freeze them "
                "(during an incident, say). Beat sends no request context: keep it a plain on/off switch.",
)

"""Ambient-context carriers (issue 15 §10 and the layering item): apps register what follows work into tasks."""

from contextvars import ContextVar

import pytest

from apps.core import context_carriers
from apps.core.context_carriers import carrier_register, carriers_capture, carriers_restore


@pytest.fixture
def tenant_carrier(monkeypatch):
    monkeypatch.setattr(context_carriers, "_carriers", dict(context_carriers._carriers))
    tenant: ContextVar = ContextVar("tenant", default=None)
    carrier_register(name="tenant", capture=tenant.get, restore=tenant.set)
    return tenant


def test_capture_takes_every_bound_carrier_and_restore_binds_or_clears_each(tenant_carrier):
    from apps.flags.context import current_context, set_context

    set_context({"user_id": "7"})
    tenant_carrier.set("acme")
    captured = carriers_capture()
    assert captured == {"flags": {"user_id": "7"}, "tenant": "acme"}

    carriers_restore(None)
    assert (current_context(), tenant_carrier.get(), carriers_capture()) == ({}, None, {})
    carriers_restore({"tenant": "globex"})  # flags missing from the message: cleared, not left over
    assert (current_context(), tenant_carrier.get()) == ({}, "globex")
    carriers_restore(captured)
    assert carriers_capture() == captured
    carriers_restore(None)


def test_the_flags_app_registers_its_own_carrier_and_the_outbox_does_not_import_flags():
    import ast
    from pathlib import Path

    import apps.outbox

    assert "flags" in context_carriers._carriers
    for path in Path(apps.outbox.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(name.startswith("apps.flags") for name in names), f"{path} imports the flags app"


def test_carrier_names_are_checked():
    with pytest.raises(ValueError, match="Carrier name"):
        carrier_register(name="Not A Name", capture=dict, restore=lambda value: None)

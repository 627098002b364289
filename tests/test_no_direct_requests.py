"""All outbound HTTP from apps/ and workers/ goes through apps.core.http_client (timeouts, retries,
breakers, metrics, redaction). This fails when a module imports an HTTP library directly."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("apps", "workers")
ALLOWED = (Path("apps/core/http_client.py"), Path("apps/core/resilience"))
# requests is the one the client wraps; the others would bypass it just as well.
FORBIDDEN = ("requests", "httpx", "urllib3", "aiohttp", "http.client", "urllib.request")


def forbidden_imports(source: str) -> list[str]:
    """Names of forbidden modules imported anywhere in ``source`` (including inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)]
    return found


def test_no_module_outside_the_http_client_imports_an_http_library():
    offenders = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if any(relative == allowed or allowed in relative.parents for allowed in ALLOWED):
                continue
            names = forbidden_imports(path.read_text(encoding="utf-8"))
            if names:
                offenders[str(relative)] = sorted(set(names))
    assert not offenders, f"use apps.core.http_client instead of importing HTTP libraries directly: {offenders}"


def test_the_scan_sees_every_import_form():
    source = """
import json
import requests
import requests.adapters as adapters
from requests import Session
from requests.exceptions import Timeout
from urllib import request
from urllib.request import urlopen
from . import requests_helper
def later():
    import httpx
"""
    assert forbidden_imports(source) == [
        "requests", "requests.adapters", "requests", "requests.Session", "requests.exceptions",
        "requests.exceptions.Timeout", "urllib.request", "urllib.request", "urllib.request.urlopen", "httpx",
    ]

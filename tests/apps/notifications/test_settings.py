"""WEBHOOKS_* settings: the retry schedule's parsing, and the SSRF switches' environment always winning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from settings import env
from tests.processes import ROOT


def test_the_retry_schedule_is_seconds(monkeypatch):
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "0, 1,2.5")
    assert env.seconds_list("WEBHOOKS_RETRY_SCHEDULE") == [0, 1, 2.5]


@pytest.mark.parametrize("value", ["", ",", "1,x", "-1", "nan", "1e9"])
def test_a_bad_retry_schedule_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", value or " , ")
    with pytest.raises(ImproperlyConfigured, match="WEBHOOKS_RETRY_SCHEDULE must be"):
        env.seconds_list("WEBHOOKS_RETRY_SCHEDULE")


def test_local_and_test_settings_allow_loopback_unless_the_variable_says_false():
    script = ("import importlib, json; print(json.dumps([importlib.import_module(name).WEBHOOKS_ALLOW_PRIVATE_HOSTS "
              "for name in ('settings.local', 'settings.test')]))")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WEBHOOKS_")}
    environment["TASKPLANE_ENV_FILE"] = "off"

    def run(**extra: str) -> list[bool]:
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**environment, **extra},
                                capture_output=True, text=True, timeout=60, check=True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert run() == [True, True]
    assert run(WEBHOOKS_ALLOW_PRIVATE_HOSTS="false") == [False, False]

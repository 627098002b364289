"""`create_api_key` in a terminal and in the README's `KEY=$(… | tail -n 1)` (issue 15 §0)."""

import os
import pty
import subprocess
import sys

import pytest

from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db(transaction=True)  # the child process must see the user


def test_in_a_terminal_the_note_comes_first_and_the_key_last(user):
    """issue 15 §0: stdout and stderr on one terminal: the note, then the key alone on the last line."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "manage.py", "create_api_key", user.username, "--name", "laptop"],
                               cwd=ROOT, env=process_env(), stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0, output

    lines = [line for line in output.decode().splitlines() if line.strip()]
    assert "Store it now" in lines[0] and "\x1b[" not in lines[0], "the note comes first, unstyled"
    assert lines[-1].startswith("tp_") and lines[-1].isprintable() and " " not in lines[-1]


def test_the_readme_capture_gets_exactly_the_key(user):
    script = f"KEY=$({sys.executable} manage.py create_api_key {user.username} --name laptop | tail -n 1)\n" \
             'printf %s "$KEY"'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                            timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tp_") and "\n" not in result.stdout and " " not in result.stdout
    assert "Store it now" in result.stderr

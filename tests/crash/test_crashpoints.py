"""The crash-point hook itself: inert without ``SPAREKEY_CRASH_AT``, SIGKILL at exactly the named
hit with it, a misspelt point refused at start-up, and every point in the code documented."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparekey import crashpoints
from sparekey.crashpoints import CRASH_POINTS, ENVIRONMENT_VARIABLE, crashpoint

SOURCE = Path(crashpoints.__file__).parent

_HITS = """
from sparekey.crashpoints import crashpoint
for n in range(1, 6):
    crashpoint("notify.marked")  # another point: never counted
    crashpoint("notify.sent")
    print(n, flush=True)
"""


def _run(program: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT_VARIABLE}
    if crash_at is not None:
        env[ENVIRONMENT_VARIABLE] = crash_at
    return subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )


def _points_in_code() -> set[str]:
    found = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "crashpoint"
            ):
                (argument,) = node.args
                assert isinstance(argument, ast.Constant), f"{path}: name a point literally"
                found.add(str(argument.value))
    return found


def test_every_point_in_the_code_is_documented_and_every_documented_point_is_in_the_code() -> None:
    assert _points_in_code() == set(CRASH_POINTS)


def test_without_the_variable_every_point_is_a_no_op() -> None:
    assert ENVIRONMENT_VARIABLE not in os.environ
    for name in CRASH_POINTS:
        crashpoint(name)
    finished = _run(_HITS, None)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["1", "2", "3", "4", "5"]
    assert finished.stderr == ""


@pytest.mark.parametrize(
    ("crash_at", "survived"), [("notify.sent", []), ("notify.sent:3", ["1", "2"])]
)
def test_the_named_hit_kills_the_process_with_sigkill(crash_at: str, survived: list[str]) -> None:
    killed = _run(_HITS, crash_at)
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout.split() == survived
    assert f"{ENVIRONMENT_VARIABLE} is set" in killed.stderr, "the process says it is armed"


@pytest.mark.parametrize(
    ("crash_at", "message"),
    [
        ("verify.comitted", "no crash point named 'verify.comitted'"),
        ("notify.sent:0", "a whole number from 1"),
        ("notify.sent:x", "a whole number from 1"),
    ],
)
def test_a_wrong_setting_stops_the_process_at_start_up(crash_at: str, message: str) -> None:
    refused = _run(_HITS, crash_at)
    assert refused.returncode == 1
    assert "CrashPointError" in refused.stderr
    assert message in refused.stderr
    assert refused.stdout == ""

"""``copy NAME`` on a real X11 clipboard (Xvfb and xclip): the code is there, and it is cleared
after the delay unless the user has copied something else since."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparekey.protocols.otpauth import b32encode
from tests.authenticator.conftest import LIGHT_ARGS, Clock, Run

pytestmark = pytest.mark.skipif(
    shutil.which("Xvfb") is None or shutil.which("xclip") is None,
    reason="needs Xvfb and xclip (the test command installs them)",
)


@pytest.fixture
def display() -> Iterator[str]:
    """A private X server for this test."""
    number = 40 + os.getpid() % 400
    name = f":{number}"
    server = subprocess.Popen(
        ["Xvfb", name, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socket = Path(f"/tmp/.X11-unix/X{number}")  # noqa: S108 - where X servers put sockets
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert socket.exists(), "Xvfb did not start"
    yield name
    server.terminate()
    server.wait(timeout=10)


def _paste(display: str) -> str:
    return subprocess.run(
        ["xclip", "-selection", "clipboard", "-out"],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout


def _wait_for(display: str, expected: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    current = _paste(display)
    while current != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        current = _paste(display)
    return current


def test_copy_puts_the_code_on_the_clipboard_and_clears_it(
    run: Run, clock: Clock, display: str
) -> None:
    assert run("init", *LIGHT_ARGS).code == 0
    run("add", "--secret", b32encode(b"12345678901234567890"), "--issuer", "RFC", "--digits", "8")
    clock.now = 59
    env: dict[str, str | None] = {"DISPLAY": display, "WAYLAND_DISPLAY": None}
    result = run("copy", "RFC", "--clear-after", "1.5", env=env)
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert "94287082" not in result.stderr  # the code is not printed
    assert "cleared in 1.5 s" in result.stderr
    assert _paste(display) == "94287082"
    assert _wait_for(display, "", 10) == ""


def test_clearing_leaves_what_the_user_copied_since(run: Run, clock: Clock, display: str) -> None:
    assert run("init", *LIGHT_ARGS).code == 0
    run("add", "--secret", b32encode(b"12345678901234567890"), "--issuer", "RFC")
    clock.now = 59
    env: dict[str, str | None] = {"DISPLAY": display, "WAYLAND_DISPLAY": None}
    assert run("copy", "RFC", "--clear-after", "1", env=env).code == 0
    subprocess.run(
        ["xclip", "-selection", "clipboard", "-in"],
        input="a note of mine",
        text=True,
        env={**os.environ, "DISPLAY": display},
        check=True,
        timeout=5,
    )
    time.sleep(2.5)
    assert _paste(display) == "a note of mine"


def test_without_a_desktop_session_copy_says_what_is_missing(run: Run) -> None:
    assert run("init", *LIGHT_ARGS).code == 0
    run("add", "--secret", b32encode(b"12345678901234567890"), "--issuer", "RFC")
    result = run("copy", "RFC", env={"DISPLAY": None, "WAYLAND_DISPLAY": None})
    assert result.code == 1
    assert result.stderr.startswith("sparekey-authenticator: error: no clipboard here")

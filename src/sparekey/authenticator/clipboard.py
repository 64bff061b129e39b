"""The system clipboard, through the tools each desktop ships, and clearing it after a while.

Backends, first that fits: ``wl-copy``/``wl-paste`` under Wayland, ``xclip`` or ``xsel`` under X11,
``pbcopy``/``pbpaste`` on macOS, ``clip``/PowerShell on Windows. A code put on the clipboard is
cleared after a delay by a small detached process (``python -m sparekey.authenticator.clipboard``)
that gets the code on its standard input — never in its arguments or environment — and clears the
clipboard only if it still holds that code, so whatever the user copied since is left alone.
"""

from __future__ import annotations

import hmac
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["Clipboard", "ClipboardError", "detect", "schedule_clear"]


class ClipboardError(Exception):
    """No clipboard tool, or it failed; one line."""


@dataclass(frozen=True, kw_only=True)
class Clipboard:
    name: str
    copy_command: tuple[str, ...]
    paste_command: tuple[str, ...]

    def copy(self, text: str) -> None:
        # xclip and wl-copy fork a child that serves the selection and keeps any pipe it was
        # given open, so the copy command's output goes nowhere rather than into a pipe.
        result = self._run(self.copy_command, text, capture=False)
        if result.returncode != 0:
            tool, status = self.copy_command[0], result.returncode
            raise ClipboardError(f"the clipboard tool {tool} failed (exit status {status})")

    def paste(self) -> str:
        result = self._run(self.paste_command, None, capture=True)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            reason = message[0] if message else f"exit status {result.returncode}"
            raise ClipboardError(f"the clipboard tool {self.paste_command[0]} failed: {reason}")
        return result.stdout.decode(errors="replace")

    def _run(
        self, command: tuple[str, ...], text: str | None, *, capture: bool
    ) -> subprocess.CompletedProcess[bytes]:
        output = subprocess.PIPE if capture else subprocess.DEVNULL
        try:
            return subprocess.run(  # noqa: S603 - fixed tool names, no shell
                command,
                input=text.encode() if text is not None else None,
                stdin=subprocess.DEVNULL if text is None else None,
                stdout=output,
                stderr=output,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClipboardError(f"the clipboard tool {command[0]} did not run: {exc}") from exc


def detect() -> Clipboard:
    """The clipboard of this session, or :class:`ClipboardError` saying what to install."""
    if sys.platform == "darwin" and shutil.which("pbcopy"):
        return Clipboard(name="pbcopy", copy_command=("pbcopy",), paste_command=("pbpaste",))
    if sys.platform == "win32":  # pragma: no cover - not run here
        return Clipboard(
            name="windows",
            copy_command=("clip",),
            paste_command=("powershell", "-NoProfile", "-Command", "Get-Clipboard"),
        )
    if os.environ.get("WAYLAND_DISPLAY") and shutil.which("wl-copy"):
        return Clipboard(
            name="wl-clipboard",
            copy_command=("wl-copy",),
            paste_command=("wl-paste", "--no-newline"),
        )
    if os.environ.get("DISPLAY"):
        if shutil.which("xclip"):
            return Clipboard(
                name="xclip",
                copy_command=("xclip", "-selection", "clipboard", "-in"),
                paste_command=("xclip", "-selection", "clipboard", "-out"),
            )
        if shutil.which("xsel"):
            return Clipboard(
                name="xsel",
                copy_command=("xsel", "--clipboard", "--input"),
                paste_command=("xsel", "--clipboard", "--output"),
            )
    raise ClipboardError(
        "no clipboard here: needs a desktop session with wl-clipboard, xclip or xsel installed"
    )


def schedule_clear(clipboard: Clipboard, text: str, *, after: float) -> None:
    """Start a detached process that clears ``text`` from the clipboard in ``after`` seconds."""
    process = subprocess.Popen(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "sparekey.authenticator.clipboard", clipboard.name, str(after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    assert process.stdin is not None
    process.stdin.write(text.encode())
    process.stdin.close()
    if sys.platform != "win32":
        process.wait(timeout=10)  # it forks and leaves at once; the grandchild waits


def _detach() -> None:
    """Leave the waiting to a grandchild, so the caller is not left with a running child."""
    if sys.platform != "win32" and os.fork() > 0:
        os._exit(0)


def _clear_later(name: str, after: float, text: str) -> int:
    time.sleep(after)
    try:
        clipboard = detect()
        if clipboard.name != name:
            return 1
        if hmac.compare_digest(clipboard.paste().strip().encode(), text.encode()):
            clipboard.copy("")
    except ClipboardError:
        return 1
    return 0


if __name__ == "__main__":
    _code = sys.stdin.read()
    _detach()
    sys.exit(_clear_later(sys.argv[1], float(sys.argv[2]), _code))

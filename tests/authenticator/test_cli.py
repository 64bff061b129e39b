"""``sparekey-authenticator`` as a user runs it: codes checked against oathtool and the RFC and
Steam vectors, the JSON listing, errors as one line with exit status 1."""

from __future__ import annotations

import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import segno

from sparekey.authenticator.vault import Vault
from sparekey.protocols.otpauth import b32encode
from tests.authenticator.conftest import LIGHT_ARGS, T0, Clock, Run

RFC_SHA1 = b"12345678901234567890"
RFC_SHA256 = b"12345678901234567890123456789012"
RFC_SHA512 = RFC_SHA1 * 3 + b"1234"
RECOVERY_KEY = re.compile(r"^([0-9A-Z]{4}-){7}[0-9A-Z]{4}$", re.MULTILINE)

needs_oathtool = pytest.mark.skipif(shutil.which("oathtool") is None, reason="needs oathtool")


def _oathtool(*args: str) -> str:
    return subprocess.run(
        ["oathtool", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _independent_hotp(key: bytes, counter: int, digits: int, digest: str) -> str:
    """RFC 4226 section 5.3 written again here, not the code under test."""
    mac = hmac.new(key, counter.to_bytes(8, "big"), digest).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).rjust(digits, "0")


def _uri(kind: str, key: bytes, label: str, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"otpauth://{kind}/{label}?secret={b32encode(key)}" + (f"&{query}" if query else "")


def _init(run: Run) -> str:
    result = run("init", *LIGHT_ARGS)
    assert result.code == 0, result.stderr
    return result.stderr


def test_a_writing_command_creates_the_vault_and_shows_the_recovery_key_once(
    run: Run, vault_path: Path
) -> None:
    first = run("add", _uri("totp", RFC_SHA1, "Example:alice"))
    assert first.code == 0, first.stderr
    assert first.stdout == ""
    keys = RECOVERY_KEY.findall(first.stderr)
    assert len(keys) == 1
    recovery_key = RECOVERY_KEY.search(first.stderr)
    assert recovery_key is not None
    assert Vault.unlock(vault_path.read_bytes(), recovery_key=recovery_key.group(0)).entries
    second = run("add", _uri("totp", RFC_SHA256, "Example:bob"))
    assert second.code == 0
    assert RECOVERY_KEY.search(second.stderr) is None
    assert oct(vault_path.stat().st_mode & 0o777) == "0o600"
    assert oct(vault_path.parent.stat().st_mode & 0o777) == "0o700"


@needs_oathtool
@pytest.mark.parametrize(
    ("key", "algorithm", "digits", "period"),
    [
        (RFC_SHA1, "SHA1", 6, 30),
        (RFC_SHA1, "SHA1", 8, 30),
        (RFC_SHA256, "SHA256", 8, 30),
        (RFC_SHA512, "SHA512", 8, 30),
        (RFC_SHA256, "SHA256", 7, 20),
        (RFC_SHA512, "SHA512", 6, 60),
        (b"short key!", "SHA1", 6, 15),
    ],
)
def test_totp_codes_agree_with_oathtool(
    run: Run, clock: Clock, key: bytes, algorithm: str, digits: int, period: int
) -> None:
    _init(run)
    uri = _uri("totp", key, "Test:x", algorithm=algorithm, digits=digits, period=period)
    assert run("add", uri).code == 0
    for now in (T0, T0 + 59.9, 2_000_000_000.0, 20_000_000_000.0):
        clock.now = now
        result = run("code", "Test")
        assert result.code == 0, result.stderr
        expected = _oathtool(
            f"--totp={algorithm.lower()}",
            "-b",
            "-d",
            str(digits),
            "-s",
            str(period),
            "-N",
            f"@{int(now)}",
            b32encode(key),
        )
        assert result.stdout == expected + "\n"


@pytest.mark.parametrize(
    ("seconds", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_vectors_through_the_command_line(
    run: Run, clock: Clock, seconds: int, code: str
) -> None:
    _init(run)
    assert run("add", "--secret", b32encode(RFC_SHA1), "--issuer", "RFC", "--digits", "8").code == 0
    clock.now = seconds
    assert run("code", "RFC", "--quiet").stdout == code + "\n"


@pytest.mark.parametrize("digits", [4, 5, 9, 10])
@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
def test_digits_oathtool_does_not_cover_agree_with_an_independent_computation(
    run: Run, clock: Clock, digits: int, algorithm: str
) -> None:
    _init(run)
    uri = _uri("totp", RFC_SHA512, "X:y", algorithm=algorithm, digits=digits, period=30)
    assert run("add", uri).code == 0
    clock.now = 1_111_111_111
    expected = _independent_hotp(RFC_SHA512, 1_111_111_111 // 30, digits, algorithm.lower())
    assert run("code", "X").stdout == expected + "\n"


@needs_oathtool
def test_hotp_shows_each_counter_once_and_agrees_with_oathtool(run: Run, vault_path: Path) -> None:
    _init(run)
    assert run("add", _uri("hotp", RFC_SHA1, "Bank:me", counter=7)).code == 0
    expected = _oathtool("--hotp", "-b", "-c", "7", "-w", "3", b32encode(RFC_SHA1)).split()
    shown = []
    for _ in range(4):
        result = run("code", "Bank")
        assert result.code == 0
        shown.append(result.stdout.strip())
    assert shown == expected
    assert "counter 10" in result.stderr
    listing = json.loads(run("list", "--json").stdout)
    assert listing[0]["counter"] == 11


def test_steam_codes_match_the_published_vector(run: Run, clock: Clock) -> None:
    _init(run)
    result = run("add", "--type", "steam", "--secret", "63BEDWCQZKTQWPESARIERL5DTTQFCJTK")
    assert result.code == 0, result.stderr
    for now, code in ((1511200518, "FR8RV"), (1511200714, "9P3VP")):
        clock.now = now
        assert run("code", "steam").stdout == code + "\n"


def test_code_tells_how_long_it_stays_valid_on_stderr(run: Run, clock: Clock) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA1, "A:b", period=30))
    clock.now = T0 + 18
    result = run("code", "A")
    assert result.stderr.strip() == "valid for 12 s"


def test_list_json_never_shows_a_secret_unless_asked(run: Run) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA256, "Airbnb:Elijah", algorithm="SHA256", digits=7, period=20))
    run("add", _uri("hotp", RFC_SHA1, "Issuu:James", counter=3))
    listing = run("list", "--json")
    assert listing.code == 0
    entries = json.loads(listing.stdout)
    assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == [
        {
            "issuer": "Airbnb",
            "account": "Elijah",
            "type": "totp",
            "algorithm": "SHA256",
            "digits": 7,
            "period": 20,
            "note": "",
        },
        {
            "issuer": "Issuu",
            "account": "James",
            "type": "hotp",
            "algorithm": "SHA1",
            "digits": 6,
            "counter": 3,
            "note": "",
        },
    ]
    assert b32encode(RFC_SHA256) not in listing.stdout
    revealed = json.loads(run("list", "--json", "--reveal").stdout)
    assert revealed[0]["secret"] == b32encode(RFC_SHA256)
    assert revealed[1]["otpauth_uri"].startswith("otpauth://hotp/Issuu:James?secret=")
    table = run("list")
    assert "Airbnb" in table.stdout
    assert b32encode(RFC_SHA256) not in table.stdout


def test_search_edit_and_remove(run: Run) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA1, "GitHub:alice"))
    run("add", _uri("totp", RFC_SHA256, "GitLab:alice"))
    found = json.loads(run("search", "git alice", "--json").stdout)
    assert len(found) == 2
    ambiguous = run("code", "alice")
    assert ambiguous.code == 1
    assert "matches 2 entries" in ambiguous.stderr
    assert run("edit", "gitlab", "--account", "alice@work", "--note", "work laptop").code == 0
    assert json.loads(run("search", "work", "--json").stdout)[0]["account"] == "alice@work"
    refused = run("remove", "github")
    assert refused.code == 1
    assert "--yes" in refused.stderr
    assert run("remove", "github", "--yes").code == 0
    assert [e["issuer"] for e in json.loads(run("list", "--json").stdout)] == ["GitLab"]


def test_add_from_a_qr_image(run: Run, tmp_path: Path, clock: Clock) -> None:
    _init(run)
    image = tmp_path / "qr.png"
    segno.make(_uri("totp", RFC_SHA1, "Shop:me", issuer="Shop"), error="m").save(image, scale=4)
    result = run("add", "--qr", str(image))
    assert result.code == 0, result.stderr
    clock.now = 59
    assert run("code", "shop").stdout == "287082\n"


def test_the_password_can_come_from_a_file(run: Run, tmp_path: Path) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA1, "A:b"))
    password_file = tmp_path / "pw"
    password_file.write_text("correct horse\n")
    env: dict[str, str | None] = {"SPAREKEY_VAULT_PASSWORD": None}
    ok = run("--password-file", str(password_file), "list", "--json", env=env)
    assert ok.code == 0, ok.stderr
    password_file.write_text("wrong\n")
    wrong = run("--password-file", str(password_file), "list", env=env)
    assert (wrong.code, wrong.stdout) == (1, "")
    assert wrong.stderr == "sparekey-authenticator: error: the password does not open this vault\n"


def test_without_a_password_or_terminal_it_says_how_to_give_one(run: Run) -> None:
    _init(run)
    result = run("list", env={"SPAREKEY_VAULT_PASSWORD": None})
    assert result.code == 1
    assert result.stderr.count("\n") == 1
    assert "--password-file" in result.stderr


def test_passwd_and_the_recovery_key(run: Run, tmp_path: Path) -> None:
    created = _init(run)
    match = RECOVERY_KEY.search(created)
    assert match is not None
    key_file = tmp_path / "recovery"
    key_file.write_text(match.group(0).lower() + "\n")
    env: dict[str, str | None] = {
        "SPAREKEY_VAULT_PASSWORD": None,
        "SPAREKEY_VAULT_NEW_PASSWORD": "battery staple",
    }
    changed = run("--recovery-key-file", str(key_file), "passwd", env=env)
    assert changed.code == 0, changed.stderr
    assert run("list").code == 1  # the old password
    assert run("list", env={"SPAREKEY_VAULT_PASSWORD": "battery staple"}).code == 0
    renewed = run("recovery-key", env={"SPAREKEY_VAULT_PASSWORD": "battery staple"})
    assert renewed.code == 0
    assert RECOVERY_KEY.search(renewed.stderr) is not None
    old = run("--recovery-key-file", str(key_file), "list", env=env)
    assert old.code == 1
    assert "recovery key does not open" in old.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "otpauth://totp/x?secret=!!!"], "base32"),
        (["add", "otpauth://totp/x?secret=AAAA&digits=11"], "digits"),
        (["add", "--secret", "JBSWY3DPEHPK3PXP", "--digits", "3"], "digits"),
        (["add"], "exactly one"),
        (["add", "--qr", "/nonexistent.png"], "cannot read"),
        (["code", "nothing"], "no entry matches"),
        (["import", "/nonexistent.json"], "cannot read"),
        (["--no-such-option"], "no-such-option"),
        (["init", *LIGHT_ARGS], "already exists"),
        (["init", "--kdf-time", "1"], "already exists"),
        (["edit", "A"], "nothing to change"),
        (["restore-version", "3"], "no kept version"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(run: Run, args: list[str], message: str) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA1, "A:b"))
    result = run(*args)
    assert result.code == 1, result.stdout
    assert result.stderr.startswith("sparekey-authenticator: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_vault_points_at_the_kept_versions(run: Run, vault_path: Path) -> None:
    _init(run)
    run("add", _uri("totp", RFC_SHA1, "A:b"))
    document = json.loads(vault_path.read_bytes())
    document["data"] = document["data"][:-4] + "AAA="
    vault_path.write_text(json.dumps(document))
    broken = run("list")
    assert broken.code == 1
    assert "restore-version" in broken.stderr
    assert run("restore-version").code == 0
    assert run("list", "--json").code == 0


def test_the_installed_console_scripts_run(tmp_path: Path) -> None:
    """The real entry point, as a separate process: stdout holds the code alone."""
    scripts = Path(sys.executable).parent
    env = {**os.environ, "SPAREKEY_VAULT_PASSWORD": "pw", "SPAREKEY_VAULT": str(tmp_path / "v")}
    for name in ("sparekey-authenticator", "skauth"):
        assert (scripts / name).exists()
    created = subprocess.run(
        [scripts / "skauth", "init", *LIGHT_ARGS], env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    added = subprocess.run(
        [
            scripts / "sparekey-authenticator",
            "add",
            "--secret",
            b32encode(RFC_SHA1),
            "--issuer",
            "E",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    code = subprocess.run(
        [scripts / "sparekey-authenticator", "code", "E"], env=env, capture_output=True, text=True
    )
    assert code.returncode == 0
    assert re.fullmatch(r"\d{6}\n", code.stdout)
    missing = subprocess.run(
        [scripts / "sparekey-authenticator", "code", "nope"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stderr == "sparekey-authenticator: error: no entry matches 'nope'\n"
    without_tty = subprocess.run(
        [scripts / "sparekey-authenticator"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert without_tty.returncode == 1
    assert without_tty.stdout == ""
    assert "no command given" in without_tty.stderr


def _talk(argv: list[str], env: dict[str, str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, answering each prompt as a person would."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout, stderr and /dev/tty
        os.execve(argv[0], argv, env)  # noqa: S606 - our own console script
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if pending and pending[0][0].encode() in seen:
            os.write(fd, pending.pop(0)[1].encode() + b"\n")
            seen += b"<answered>"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_on_a_terminal_the_password_is_asked_for_and_not_echoed(tmp_path: Path) -> None:
    skauth = str(Path(sys.executable).parent / "skauth")
    env = {k: v for k, v in os.environ.items() if k != "SPAREKEY_VAULT_PASSWORD"}
    env["SPAREKEY_VAULT"] = str(tmp_path / "vault.json")
    code, screen = _talk(
        [skauth, "init", *LIGHT_ARGS],
        env,
        [("New vault password:", "typed secret"), ("New vault password (again):", "typed secret")],
    )
    assert code == 0, screen
    assert "typed secret" not in screen
    assert RECOVERY_KEY.search(screen.replace("\r", ""))
    code, screen = _talk(
        [skauth, "add", "--secret", b32encode(RFC_SHA1), "--issuer", "Typed"],
        env,
        [("Vault password:", "typed secret")],
    )
    assert code == 0, screen
    code, screen = _talk([skauth, "list", "--json"], env, [("Vault password:", "wrong")])
    assert code == 1
    assert "the password does not open this vault" in screen

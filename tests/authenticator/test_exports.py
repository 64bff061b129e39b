"""``export`` as a user runs it: every format goes back in through ``import`` unchanged, the Aegis
file opens with the recipe in FORMATS.md (c), the Sparekey backup opens with the vault's password
or recovery key and leaks nothing, and files are never replaced unasked."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keyrings.alt.file import PlaintextKeyring

from sparekey.authenticator import core
from sparekey.authenticator.store import VaultStore
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenKind
from tests.authenticator.conftest import LIGHT_ARGS, T0, Result, Run

VAULT_PASSWORD = "correct horse"  # what the run fixture sets in $SPAREKEY_VAULT_PASSWORD
EXPORT_PASSWORD = "export pass wörd"
_T, _H = TokenKind.TOTP, TokenKind.HOTP
_SHA1, _SHA256, _SHA512 = HashAlgorithm.SHA1, HashAlgorithm.SHA256, HashAlgorithm.SHA512


def _key(n: int, size: int = 20) -> bytes:
    return hashlib.sha512(f"secret {n}".encode()).digest()[:size]


# Google Authenticator holds the first three, the HOTP one and the bulk ones (12: two QR codes).
TOKENS = [
    Token(kind=_T, secret=_key(1), issuer="Acme", account="alice@example.com"),
    Token(
        kind=_T,
        secret=_key(2, 32),
        issuer="Zürich Bank",
        account="bob+2fa@example.com",
        algorithm=_SHA256,
        digits=8,
    ),
    Token(kind=_T, secret=_key(3, 64), issuer="GitHub", account="carol", algorithm=_SHA512),
    Token(kind=_T, secret=_key(4), issuer="Seven", account="dave", digits=7),
    Token(kind=_T, secret=_key(5, 32), issuer="Fast", account="erin", algorithm=_SHA256, period=20),
    Token(
        kind=_T,
        secret=_key(6, 64),
        issuer="Slow",
        account="frank",
        algorithm=_SHA512,
        digits=8,
        period=60,
    ),
    Token(kind=_H, secret=_key(7), issuer="Counter", account="grace", counter=41, note="n"),
    Token.steam(secret=_key(8, 10), account="heidi"),
    *(Token(kind=_T, secret=_key(10 + n), issuer=f"Bulk {n}", account=f"u{n}") for n in range(8)),
]
NOT_FOR_GOOGLE = {
    "Seven: dave": "7-digit codes",
    "Fast: erin": "a 20-second period",
    "Slow: frank": "a 60-second period",
    "Steam: heidi": "Steam tokens",
}
GOOGLE_TOKENS = [t for t in TOKENS if t.label not in NOT_FOR_GOOGLE]

Row = tuple[str, str, str, str, str, int, int]


def _expected(tokens: list[Token]) -> list[Row]:
    return sorted(
        (
            t.issuer,
            t.account,
            t.kind.value,
            b32encode(t.secret),
            t.algorithm.value,
            t.digits,
            t.counter if t.kind is _H else t.period,
        )
        for t in tokens
    )


def _rows(run: Run, vault: Path) -> list[Row]:
    listed = run("--vault", str(vault), "list", "--json", "--reveal")
    assert listed.code == 0, listed.stderr
    return sorted(
        (
            e["issuer"],
            e["account"],
            e["type"],
            e["secret"],
            e["algorithm"],
            e["digits"],
            e["counter"] if e["type"] == "hotp" else e["period"],
        )
        for e in json.loads(listed.stdout)
    )


def _fill(run: Run, vault_path: Path, tokens: list[Token]) -> str:
    """A vault made by ``init`` holding ``tokens``; returns the recovery key ``init`` printed."""
    created = run("init", *LIGHT_ARGS)
    assert created.code == 0, created.stderr
    store = VaultStore(vault_path)
    vault = core.unlock(store, core.Credentials(password=VAULT_PASSWORD, use_keyring=False))
    core.add_tokens(store, vault, tokens, now=T0)
    return created.stderr.strip().splitlines()[-1]


@pytest.fixture
def filled(run: Run, vault_path: Path) -> str:
    return _fill(run, vault_path, TOKENS)


def _secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _one_line_error(result: Result, message: str) -> None:
    assert result.code == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("sparekey-authenticator: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("format_name", ["otpauth", "aegis", "google-qr", "sparekey"])
def test_every_format_goes_back_in_through_import(
    run: Run, filled: str, vault_path: Path, tmp_path: Path, format_name: str
) -> None:
    before = vault_path.read_bytes()
    out = tmp_path / "export"
    export_args: list[str] = []
    import_args: list[str] = []
    if format_name == "aegis":
        password = _secret_file(tmp_path, "export-password", EXPORT_PASSWORD)
        export_args = ["--export-password-file", str(password)]
        import_args = ["--import-password-file", str(password)]
    elif format_name == "sparekey":
        password = _secret_file(tmp_path, "vault-password", VAULT_PASSWORD)
        import_args = ["--import-password-file", str(password)]

    result = run("export", format_name, str(out), *export_args)

    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert vault_path.read_bytes() == before  # an export changes nothing, not even a counter
    lines = result.stderr.splitlines()
    plaintext = [line for line in lines if "plain text" in line]
    assert len(plaintext) == (1 if format_name in {"otpauth", "google-qr"} else 0)
    if format_name == "google-qr":
        files = [tmp_path / "export-1.png", tmp_path / "export-2.png"]
        assert sorted(tmp_path.glob("export*")) == files
        skipped = {line for line in lines if line.startswith("Skipped ")}
        assert skipped == {
            f"Skipped {label}: Google Authenticator cannot hold {why}"
            for label, why in NOT_FOR_GOOGLE.items()
        }
        assert lines[-1] == f"Exported 12 accounts to {files[0]} … export-2.png (google-qr)."
        expected = _expected(GOOGLE_TOKENS)
    else:
        files = [out]
        assert lines[-1] == f"Exported {len(TOKENS)} accounts to {out} ({format_name})."
        expected = _expected(TOKENS)
    assert all(_mode(path) == 0o600 for path in files)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    other = tmp_path / "other" / "vault.json"
    imported = run("--vault", str(other), "import", *map(str, files), *import_args)
    assert imported.code == 0, imported.stderr
    assert f"Imported {len(expected)} of {len(expected)} accounts" in imported.stderr
    assert _rows(run, other) == expected
    assert _rows(run, vault_path) == _expected(TOKENS)


def test_otpauth_lines_are_what_other_apps_read(run: Run, filled: str, tmp_path: Path) -> None:
    out = tmp_path / "codes.txt"
    assert run("export", "otpauth", str(out)).code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(TOKENS)
    steam = next(line for line in lines if "heidi" in line)
    assert steam.startswith("otpauth://steam/Steam:heidi?secret=")
    hotp = next(line for line in lines if "grace" in line)
    assert hotp.startswith("otpauth://hotp/Counter:grace?")
    assert "counter=41" in hotp


def _open_aegis(document: dict[str, object], password: str) -> dict[str, object]:
    """FORMATS.md (c), independently of the module: scrypt -> slot key -> master key -> db."""
    header = document["header"]
    assert isinstance(header, dict)
    (slot,) = header["slots"]
    assert (slot["type"], slot["n"], slot["r"], slot["p"]) == (1, 32768, 8, 1)
    salt = bytes.fromhex(slot["salt"])
    slot_key = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=slot["n"],
        r=slot["r"],
        p=slot["p"],
        dklen=32,
        maxmem=64 << 20,
    )
    nonce, tag = (bytes.fromhex(slot["key_params"][k]) for k in ("nonce", "tag"))
    master_key = AESGCM(slot_key).decrypt(nonce, bytes.fromhex(slot["key"]) + tag, None)
    params = header["params"]
    assert isinstance(document["db"], str)
    db = json.loads(
        AESGCM(master_key).decrypt(
            bytes.fromhex(params["nonce"]),
            base64.b64decode(document["db"]) + bytes.fromhex(params["tag"]),
            None,
        )
    )
    assert isinstance(db, dict)
    return db


def test_the_aegis_export_opens_with_the_documented_recipe(
    run: Run, filled: str, tmp_path: Path
) -> None:
    out = tmp_path / "aegis.json"
    password = _secret_file(tmp_path, "pw", EXPORT_PASSWORD)
    assert run("export", "aegis", str(out), "--export-password-file", str(password)).code == 0
    document = json.loads(out.read_bytes())
    db = _open_aegis(document, EXPORT_PASSWORD)
    assert db["version"] == 3
    entries = db["entries"]
    assert isinstance(entries, list)
    found = sorted(
        (
            e["issuer"],
            e["name"],
            e["type"],
            e["info"]["secret"],
            e["info"]["algo"],
            e["info"]["digits"],
            e["info"]["counter"] if e["type"] == "hotp" else e["info"]["period"],
        )
        for e in entries
    )
    assert found == _expected(TOKENS)
    assert next(e for e in entries if e["name"] == "grace")["note"] == "n"
    with pytest.raises(InvalidTag):
        _open_aegis(document, EXPORT_PASSWORD + "x")

    wrong = _secret_file(tmp_path, "wrong", "not it")
    other = tmp_path / "other.json"
    refused = run("--vault", str(other), "import", str(out), "--import-password-file", str(wrong))
    _one_line_error(refused, "does not open")
    assert not other.exists()


def test_a_plain_aegis_file_only_when_asked(run: Run, filled: str, tmp_path: Path) -> None:
    out = tmp_path / "aegis.json"
    _one_line_error(run("export", "aegis", str(out)), "--unencrypted")
    assert not out.exists()
    result = run("export", "aegis", str(out), "--unencrypted")
    assert result.code == 0, result.stderr
    assert "plain text" in result.stderr
    document = json.loads(out.read_bytes())
    assert document["header"] == {"slots": None, "params": None}
    assert len(document["db"]["entries"]) == len(TOKENS)


def test_the_sparekey_backup_opens_with_the_recovery_key_and_leaks_nothing(
    run: Run, vault_path: Path, tmp_path: Path, file_keyring: PlaintextKeyring
) -> None:
    recovery_key = _fill(run, vault_path, TOKENS)
    assert run("keyring", "enable").code == 0
    out = tmp_path / "backup.json"
    assert run("export", "sparekey", str(out)).code == 0

    text = out.read_text()
    document = json.loads(text)
    assert document["format"] == "sparekey-authenticator-vault"
    assert sorted(slot["type"] for slot in document["slots"]) == ["password", "recovery"]
    vault_slots = json.loads(vault_path.read_bytes())["slots"]
    assert "keyring" in {slot["type"] for slot in vault_slots}  # the vault itself keeps it
    for token in TOKENS:
        assert b32encode(token.secret) not in text
        assert token.secret.hex() not in text
        assert base64.b64encode(token.secret).decode() not in text
        for name in (token.issuer, token.account):
            if len(name) >= 6:  # shorter ones could turn up by chance in base64
                assert name not in text
                assert json.dumps(name)[1:-1] not in text

    key_file = _secret_file(tmp_path, "recovery-key", recovery_key)
    other = tmp_path / "other.json"
    imported = run(
        "--vault", str(other), "import", str(out), "--import-password-file", str(key_file)
    )
    assert imported.code == 0, imported.stderr
    assert "format: sparekey" in imported.stderr
    assert _rows(run, other) == _expected(TOKENS)


def test_a_tampered_sparekey_backup_is_refused(run: Run, filled: str, tmp_path: Path) -> None:
    out = tmp_path / "backup.json"
    assert run("export", "sparekey", str(out)).code == 0
    document = json.loads(out.read_bytes())
    data = bytearray(base64.b64decode(document["data"]))
    data[len(data) // 2] ^= 0x01
    document["data"] = base64.b64encode(bytes(data)).decode()
    out.write_text(json.dumps(document))
    password = _secret_file(tmp_path, "pw", VAULT_PASSWORD)
    other = tmp_path / "other.json"
    result = run("--vault", str(other), "import", str(out), "--import-password-file", str(password))
    _one_line_error(result, "damaged or altered")
    assert not other.exists()

    wrong = _secret_file(tmp_path, "wrong", "battery staple")
    result = run("--vault", str(other), "import", str(out), "--import-password-file", str(wrong))
    _one_line_error(result, "does not open this Sparekey backup")


def test_an_existing_file_is_replaced_only_with_force(
    run: Run, filled: str, tmp_path: Path
) -> None:
    out = tmp_path / "codes.txt"
    out.write_text("keep me\n")
    out.chmod(0o644)
    _one_line_error(run("export", "otpauth", str(out)), "already exists (--force replaces it)")
    assert out.read_text() == "keep me\n"

    replaced = run("export", "otpauth", str(out), "--force")
    assert replaced.code == 0, replaced.stderr
    assert out.read_text().startswith("otpauth://")
    assert _mode(out) == 0o600

    first = tmp_path / "google-1.png"
    first.write_bytes(b"keep")
    refused = run("export", "google-qr", str(tmp_path / "google"))
    _one_line_error(refused, "google-1.png already exists")
    assert first.read_bytes() == b"keep"
    assert not (tmp_path / "google-2.png").exists()


def test_google_qr_into_a_folder(run: Run, filled: str, tmp_path: Path) -> None:
    folder = tmp_path / "qr"
    folder.mkdir()
    result = run("export", "google-qr", str(folder))
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "google-export-1.png",
        "google-export-2.png",
    ]


def test_nothing_google_can_hold_is_one_line(run: Run, vault_path: Path, tmp_path: Path) -> None:
    _fill(run, vault_path, [t for t in TOKENS if t.label in NOT_FOR_GOOGLE])
    result = run("export", "google-qr", str(tmp_path / "g"))
    _one_line_error(result, "Google Authenticator can hold none of the 4 accounts")
    assert list(tmp_path.glob("g*")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "bogus", "OUT"], "unknown export format 'bogus'"),
        (["export", "otpauth", "OUT", "--export-password-file", "PW"], "aegis exports only"),
        (["export", "sparekey", "OUT", "--export-password-file", "PW"], "recovery key"),
        (["export", "google-qr", "OUT", "--unencrypted"], "aegis exports only"),
        (
            ["export", "aegis", "OUT", "--export-password-file", "PW", "--unencrypted"],
            "not both",
        ),
        (["export", "aegis", "OUT", "--export-password-file", "NOFILE"], "cannot read"),
        (["export", "otpauth", "MISSING/out.txt"], "cannot write in"),
        (["export", "sparekey", "FOLDER"], "is a folder"),
        (["export", "otpauth"], "Missing argument"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    run: Run, vault_path: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    _fill(run, vault_path, TOKENS[:1])
    places = {
        "OUT": str(tmp_path / "out"),
        "PW": str(_secret_file(tmp_path, "pw", "pw")),
        "NOFILE": str(tmp_path / "nofile"),
        "MISSING": str(tmp_path / "missing"),
        "FOLDER": str(tmp_path),
    }

    def place(arg: str) -> str:
        head, sep, rest = arg.partition("/")
        return places[head] + sep + rest if head in places else arg

    before = sorted(os.listdir(tmp_path))
    _one_line_error(run(*map(place, args)), message)
    assert sorted(os.listdir(tmp_path)) == before


def test_no_vault_or_an_empty_one(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    _one_line_error(run("export", "otpauth", str(out)), "no vault at")
    assert run("init", *LIGHT_ARGS).code == 0
    _one_line_error(run("export", "otpauth", str(out)), "no accounts to export")
    assert not out.exists()

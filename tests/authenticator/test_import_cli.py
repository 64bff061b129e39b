"""``import`` as a user runs it on other apps' real exports: the format is detected, every entry
arrives, a second import finds only duplicates, and bad files give one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segno

from sparekey.authenticator import imports
from sparekey.protocols.formats import google_migration
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.tokens import Token, TokenKind
from tests.authenticator.conftest import LIGHT_ARGS, Run
from tests.protocols.formats.peer import PEER_EXPORTS, peer_path

# file, its password, the format auto-detection must find, the issuers it holds (all in the
# shared expected table, whose secrets are checked below)
PEER_FILES = [
    ("aegis-importers/aegis_plain.json", None, "aegis", 7),
    ("aegis-importers/aegis_encrypted.json", "test", "aegis", 7),
    ("aegis-importers/2fas_authenticator_plain_v4.2fas", None, "2fas", 5),
    ("aegis-importers/2fas_authenticator_encrypted_v4.2fas", "test", "2fas", 5),
    ("aegis-importers/andotp_plain.json", None, "andotp", 7),
    ("aegis-importers/andotp_encrypted.bin", "test", "andotp", 7),
    ("aegis-importers/bitwarden.json", None, "bitwarden", None),
    ("aegis-importers/bitwarden.csv", None, "bitwarden-csv", None),
    ("aegis-importers/freeotp_plus.json", None, "freeotp-plus", None),
    ("aegis-importers/ente_auth.txt", None, "ente", 7),
    ("aegis-importers/plain.txt", None, "otpauth", 7),
    ("extract_otp_secrets/example_export.txt", None, "google", None),
    ("andotp-decrypt/accounts_new_123456.json.aes", "123456", "andotp", 1),
]
SECRETS = {
    "4SJHB4GSD43FZBAI7C2HLRJGPQ",
    "5OM4WOOGPLQEF6UGN3CPEOOLWU",
    "7ELGJSGXNCCTV3O6LKJWYFV2RA",
    "YOOMIXWS5GN6RTBPUFFWKTW5M4",
    "KUVJJOM753IHTNDSZVCNKL7GII",
    "5VAML3X35THCEBVRLV24CGBKOY",
    "JRZCL47CMXVOQMNPZR2F7J4RGI",
}


def _listing(run: Run) -> list[dict[str, object]]:
    result = run("list", "--json", "--reveal")
    assert result.code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    return entries


@pytest.mark.parametrize(("relative", "password", "format_name", "count"), PEER_FILES)
def test_each_peer_export_imports_by_detection(
    run: Run,
    tmp_path: Path,
    relative: str,
    password: str | None,
    format_name: str,
    count: int | None,
) -> None:
    path = peer_path(relative)
    data = path.read_bytes()
    assert imports.detect(data) == format_name or (format_name == "andotp" and password)
    expected = imports.read_files([path], password=password)
    assert run("init", *LIGHT_ARGS).code == 0
    args = ["import", str(path)]
    if password is not None:
        password_file = tmp_path / "export-password"
        password_file.write_text(password + "\n")
        args += ["--import-password-file", str(password_file)]
    result = run(*args)
    assert result.code == 0, result.stderr
    entries = _listing(run)
    distinct = {(t.kind, t.secret) for t in expected.tokens}  # a file may repeat a secret
    assert len(entries) == len(distinct)
    if count is not None:
        assert len(entries) == count
    if relative.startswith("aegis-importers/") and count == 7:
        assert {e["secret"] for e in entries} == SECRETS
    total = len(expected.tokens)
    assert f"Imported {len(entries)} of {total}" in result.stderr
    again = run(*args)
    assert again.code == 0
    assert f"Imported 0 of {total}" in again.stderr
    assert again.stderr.count("Duplicate, not added") == total
    assert len(_listing(run)) == len(entries)


def test_an_encrypted_export_without_its_password_says_how_to_give_it(run: Run) -> None:
    path = peer_path("aegis-importers/aegis_encrypted.json")
    result = run("import", str(path))
    assert result.code == 1
    assert result.stderr == (
        "sparekey-authenticator: error: this export is encrypted: give its password with "
        "--import-password-file\n"
    )


def test_a_wrong_export_password_is_one_line_and_changes_nothing(
    run: Run, tmp_path: Path, vault_path: Path
) -> None:
    assert run("init", *LIGHT_ARGS).code == 0
    before = vault_path.read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    for relative in (
        "aegis-importers/aegis_encrypted.json",
        "aegis-importers/2fas_authenticator_encrypted_v4.2fas",
        "aegis-importers/andotp_encrypted.bin",
        "andotp-decrypt/garbage.json.aes",
    ):
        path = peer_path(relative)
        result = run("import", str(path), "--import-password-file", str(wrong))
        assert result.code == 1, relative
        assert result.stderr.count("\n") == 1
        assert "password" in result.stderr
    assert vault_path.read_bytes() == before


def test_a_file_of_no_known_format_is_refused(run: Run, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("my shopping list\n")
    result = run("import", str(junk))
    assert result.code == 1
    assert "not an export this app knows" in result.stderr


def _google_qr_images(tmp_path: Path, count: int) -> list[Path]:
    tokens = [
        Token(kind=TokenKind.TOTP, secret=f"google secret {i:02}".encode(), issuer=f"Site{i}")
        for i in range(count)
    ]
    images = []
    for index, uri in enumerate(google_migration.encode(tokens, batch_size_limit=4)):
        image = tmp_path / f"part{index + 1}.png"
        segno.make(uri, error="l").save(image, scale=3)
        images.append(image)
    return images


def test_a_google_export_over_several_qr_images(run: Run, tmp_path: Path) -> None:
    images = _google_qr_images(tmp_path, 10)
    assert len(images) == 3
    result = run("import", *map(str, reversed(images)))
    assert result.code == 0, result.stderr
    entries = _listing(run)
    assert sorted(e["issuer"] for e in entries) == sorted(f"Site{i}" for i in range(10))
    assert {e["secret"] for e in entries} == {
        b32encode(f"google secret {i:02}".encode()) for i in range(10)
    }


def test_a_missing_google_part_is_named_and_nothing_is_imported(
    run: Run, tmp_path: Path, vault_path: Path
) -> None:
    images = _google_qr_images(tmp_path, 10)
    result = run("import", str(images[0]), str(images[2]))
    assert result.code == 1
    assert result.stderr == (
        "sparekey-authenticator: error: part 2 of 3 of this Google Authenticator export is "
        "missing\n"
    )
    assert not vault_path.exists()


def test_dry_run_changes_nothing(run: Run, vault_path: Path) -> None:
    path = peer_path("aegis-importers/plain.txt")
    result = run("import", str(path), "--dry-run")
    assert result.code == 0
    assert result.stderr.count("Would add") == 7
    assert not vault_path.exists()


def test_the_peer_exports_folder_is_where_the_tests_look() -> None:
    if not PEER_EXPORTS.is_dir():
        pytest.skip("the shared peer exports are absent here")
    assert (PEER_EXPORTS / "README.md").is_file()

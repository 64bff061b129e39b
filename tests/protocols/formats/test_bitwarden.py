import csv
import io
import json
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparekey.protocols.formats import FormatError, Skipped, bitwarden, bitwarden_csv
from sparekey.protocols.tokens import TokenKind
from tests.protocols.formats.peer import (
    assert_tokens,
    fuzz_mutations,
    parse_or_format_error,
    peer_bytes,
)

KEY = "JBSWY3DPEHPK3PXP"


def _vault(*items: dict[str, object], encrypted: bool = False) -> bytes:
    return json.dumps({"encrypted": encrypted, "folders": [], "items": list(items)}).encode()


def _item(name: str, totp: object, username: object = None) -> dict[str, object]:
    return {
        "type": 1,
        "name": name,
        "notes": None,
        "login": {"uris": None, "username": username, "password": "hunter2", "totp": totp},
    }


def _csv(*rows: tuple[str, str, str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "folder",
            "favorite",
            "type",
            "name",
            "notes",
            "fields",
            "login_uri",
            "login_username",
            "login_password",
            "login_totp",
        ]
    )
    for name, username, totp in rows:
        writer.writerow(["", "", "login", name, "a, note", "", "", username, "pw", totp])
    return out.getvalue().encode()


# --- JSON ---


def test_bitwarden_json_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/bitwarden.json")
    assert bitwarden.sniff(data)
    result = bitwarden.parse(data)
    assert result.format == "bitwarden"
    assert result.skipped == ()
    # steam://KEY carries no names: the item name is the issuer, as in Aegis.
    assert_tokens(
        result,
        ["Deno", "SPDX", "Airbnb", "Boeing"],
        overrides={"Boeing": {"issuer": "Test Steam", "account": ""}},
    )


def test_issuer_falls_back_to_the_item_name_and_the_username_is_the_account() -> None:
    data = _vault(
        _item("GitHub", KEY, "octocat"),
        _item("Mail", f"otpauth://totp/label-account?secret={KEY}", "me@example.com"),
        _item("Bank", f"otpauth://totp/Bank%20AG:from-uri?secret={KEY}&issuer=Bank%20AG"),
        _item("Card", None),
        {"type": 2, "name": "Secure note", "notes": "x"},
        _item("Empty", "  "),
    )
    result = bitwarden.parse(data)
    got = [(t.issuer, t.account, t.kind, t.digits) for t in result.tokens]
    assert got == [
        ("GitHub", "octocat", TokenKind.TOTP, 6),
        ("Mail", "me@example.com", TokenKind.TOTP, 6),
        ("Bank AG", "from-uri", TokenKind.TOTP, 6),
    ]
    assert result.skipped == ()


def test_unsupported_totp_kinds_are_skipped() -> None:
    result = bitwarden.parse(
        _vault(_item("Yandex", f"otpauth://yandex/Y:ivan?secret={KEY}", "ivan"), _item("Ok", KEY))
    )
    assert [t.issuer for t in result.tokens] == ["Ok"]
    assert result.skipped == (
        Skipped(label="Yandex: ivan", reason="Yandex tokens are not supported"),
    )


def test_an_encrypted_bitwarden_export_asks_for_an_unencrypted_one() -> None:
    data = json.dumps(
        {
            "encrypted": True,
            "passwordProtected": True,
            "salt": "c2FsdA==",
            "kdfType": 0,
            "kdfIterations": 600000,
            "encKeyValidation_DO_NOT_EDIT": "2.abc|def|ghi",
            "data": "2.xyz|uvw|rst",
        }
    ).encode()
    assert bitwarden.sniff(data)
    for password in (None, "secret"):
        with pytest.raises(FormatError, match=r"encrypted; export the vault again as \.json"):
            bitwarden.parse(data, password=password)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1, 2]", "this is not a Bitwarden JSON export (no object at the top)"),
        (b'{"encrypted": false}', "this is not a Bitwarden JSON export (no items list)"),
        (b'{"items": [3]}', "item 1 is not an object"),
        (_vault(_item("A", KEY), _item("Bad", "otpauth://totp/x?secret=1!")), "item 2 (Bad): "),
        (_vault(_item("A", "steam://")), "item 1 (A): the secret is empty"),
        (_vault(_item("A", None)), "no accounts found in this Bitwarden export"),
        (b'{"items": [', "this Bitwarden export is not valid JSON (line 1"),
        (b"\xff\xfe{}", "this Bitwarden export is not UTF-8 text"),
    ],
)
def test_bad_json_exports(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        bitwarden.parse(data)
    assert str(caught.value).startswith(message)


def test_a_truncated_json_export_fails_cleanly() -> None:
    data = peer_bytes("aegis-importers/bitwarden.json")
    with pytest.raises(FormatError, match="not valid JSON"):
        bitwarden.parse(data[: len(data) // 2])


# --- CSV ---


def test_bitwarden_csv_is_read_entry_for_entry() -> None:
    data = peer_bytes("aegis-importers/bitwarden.csv")
    assert bitwarden_csv.sniff(data)
    assert not bitwarden.sniff(data)
    assert not bitwarden_csv.sniff(peer_bytes("aegis-importers/bitwarden.json"))
    result = bitwarden_csv.parse(data)
    assert result.format == "bitwarden-csv"
    assert_tokens(
        result,
        ["Deno", "SPDX", "Airbnb", "Boeing"],
        overrides={"Boeing": {"issuer": "Test 4", "account": ""}},
    )


def test_csv_quoting_and_rows_without_totp() -> None:
    data = _csv(
        ("Acme, Inc.", "bob", KEY),
        ("No TOTP", "x", ""),
        ('Quote "q"', "", f"otpauth://totp/Q:q?secret={KEY}&issuer=Q"),
    )
    result = bitwarden_csv.parse(b"\xef\xbb\xbf" + data)
    assert [(t.issuer, t.account) for t in result.tokens] == [("Acme, Inc.", "bob"), ("Q", "q")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"name,login_totp\nA,KEY\n", "this is not a Bitwarden CSV export (the first line"),
        (b"", "this is not a Bitwarden CSV export"),
        (_csv(("A", "a", KEY), ("B", "b", "1!")), "line 3: the secret is not valid base32"),
        (_csv(("A", "a", "")), "no accounts found in this Bitwarden export"),
        (b'name,login_username,login_totp\n"A,a,KEY', "line 2: "),
    ],
)
def test_bad_csv_exports(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        bitwarden_csv.parse(data)
    assert str(caught.value).startswith(message)


def test_short_rows_are_read_as_far_as_they_go() -> None:
    data = b"name,login_username,login_totp\nA,a\nB,b," + KEY.encode() + b"\n"
    assert [t.issuer for t in bitwarden_csv.parse(data).tokens] == ["B"]


# --- fuzzing ---

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_TOTP = st.one_of(
    st.just(KEY),
    st.just("steam://" + KEY),
    st.text(max_size=20),
    st.builds(lambda s: f"otpauth://totp/a?secret={s}", st.text(max_size=10)),
    _JSON,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    for module in (bitwarden, bitwarden_csv):
        parse_or_format_error(module.parse, data)
        module.sniff(data)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        _JSON,
        st.builds(
            lambda items, enc: {"encrypted": enc, "items": items},
            st.lists(
                st.one_of(
                    _JSON,
                    st.builds(
                        lambda name, totp, user: {
                            "name": name,
                            "login": {"totp": totp, "username": user},
                        },
                        _JSON,
                        _TOTP,
                        _JSON,
                    ),
                ),
                max_size=4,
            ),
            _JSON,
        ),
    )
)
def test_json_of_the_wrong_shape(document: object) -> None:
    parse_or_format_error(bitwarden.parse, json.dumps(document).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8), _TOTP.map(str)), max_size=4))
def test_csv_rows_with_odd_cells(rows: list[tuple[str, str, str]]) -> None:
    parse_or_format_error(bitwarden_csv.parse, _csv(*rows))


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (bitwarden, "aegis-importers/bitwarden.json"),
        (bitwarden_csv, "aegis-importers/bitwarden.csv"),
    ],
)
def test_mutated_real_files(module: ModuleType, name: str) -> None:
    fuzz_mutations(module.parse, peer_bytes(name))

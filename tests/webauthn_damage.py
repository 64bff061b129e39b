"""Damaged WebAuthn browser JSON, as hypothesis strategies, for fuzz tests of the ceremonies.

A :class:`Damage` is drawn apart from the response it spoils and applied to it afterwards
(:func:`apply`), so a test can damage the fresh response a ``SoftAuthenticator`` made for a fresh
challenge (which hypothesis cannot replay) and still shrink. What is damaged, from the outside
in: the JSON (a member deleted, or given a value of any JSON type: wrong types, huge numbers,
nesting); the base64url text (characters that are not base64url, cut short); the decoded bytes
(flipped, inserted, deleted, cut); and the structures inside: ``clientDataJSON`` members, the
attestation object's CBOR (``fmt``, ``attStmt`` and its members, ``authData``), and the
authenticator data (flags, sign count, credential id length, the COSE key and its members,
trailing bytes).

The builders (:func:`member`, :func:`raw`, :func:`client_data_member`,
:func:`attestation_member`, :func:`statement_member`, :func:`cose_member`) make one damage each,
for explicit ``@example`` cases.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from hypothesis import strategies as st
from webauthn.helpers import base64url_to_bytes

from tests.softauthn import b64url, b64url_decode

__all__ = [
    "CBOR_VALUES",
    "DELETE",
    "JSON_VALUES",
    "Damage",
    "apply",
    "assertion_damage",
    "attestation_member",
    "client_data_member",
    "cose_member",
    "member",
    "raw",
    "registration_damage",
    "signed_parts",
    "statement_member",
]

_HUGE = 2**70
DELETE: Final = object()
"""The value that deletes a member instead of setting it."""

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-_HUGE, max_value=_HUGE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

CBOR_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-_HUGE, max_value=_HUGE)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.integers(min_value=-4, max_value=4), st.text(max_size=6)),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)

# Byte edits: (what, where, bytes); ``where`` is taken modulo the length when applied.
Edit = tuple[str, int, bytes]
_EDITS = st.lists(
    st.tuples(
        st.sampled_from(("flip", "insert", "delete", "cut")),
        st.integers(min_value=0, max_value=2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=3,
)
_NOT_BASE64URL = st.text(alphabet="+/=.%$ \n\x00é\ud800", min_size=1, max_size=4)


@dataclass(frozen=True)
class Damage:
    """One change to a response, with a description for hypothesis' report."""

    what: str
    change: Callable[[dict[str, Any]], None]

    def __repr__(self) -> str:
        return f"Damage({self.what})"


def apply(damages: Damage | list[Damage], response: dict[str, Any]) -> dict[str, Any]:
    """A damaged deep copy of ``response``."""
    spoiled = copy.deepcopy(response)
    for damage in [damages] if isinstance(damages, Damage) else damages:
        damage.change(spoiled)
    return spoiled


def signed_parts(response: dict[str, Any]) -> tuple[bytes, ...] | None:
    """The bytes an assertion's signature covers, and the signature, decoded as py_webauthn
    decodes them (it ignores characters outside base64url); None if undecodable."""
    inner = response.get("response")
    try:
        assert isinstance(inner, dict)
        fields = (inner["clientDataJSON"], inner["authenticatorData"], inner["signature"])
        return tuple(base64url_to_bytes(field) for field in fields)
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def _describe(where: str, value: Any) -> str:
    return f"{where} deleted" if value is DELETE else f"{where} = {value!r}"


def _set(container: dict[Any, Any], key: Any, value: Any) -> None:
    if value is DELETE:
        container.pop(key, None)
    else:
        container[key] = copy.deepcopy(value)


# -- the JSON and its base64url text ----------------------------------------------------------


def _container(response: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = response
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def member(path: tuple[str, ...], value: Any) -> Damage:
    """The member at ``path`` deleted (:data:`DELETE`) or set to the JSON ``value``."""

    def change(response: dict[str, Any]) -> None:
        container = _container(response, path)
        if container is not None:
            _set(container, path[-1], value)

    return Damage(_describe(".".join(path), value), change)


def _spoil(path: tuple[str, ...], at: int, junk: str, cut: bool) -> Damage:
    def change(response: dict[str, Any]) -> None:
        container = _container(response, path)
        if container is not None and isinstance(container.get(path[-1]), str):
            text: str = container[path[-1]]
            where = at % (len(text) + 1)
            container[path[-1]] = text[:where] if cut else text[:where] + junk + text[where:]

    how = "cut" if cut else f"insert {junk!r}"
    return Damage(f"{'.'.join(path)}: {how} at {at}", change)


def _json_damage(paths: list[tuple[str, ...]]) -> st.SearchStrategy[Damage]:
    path = st.sampled_from(paths)
    return st.one_of(
        st.builds(member, path, st.just(DELETE)),
        st.builds(member, path, JSON_VALUES),
        st.builds(
            _spoil, path, st.integers(min_value=0, max_value=600), _NOT_BASE64URL, st.booleans()
        ),
    )


# -- the decoded bytes of a base64url member --------------------------------------------------


def _field(response: dict[str, Any], field: str) -> bytes | None:
    """The decoded bytes of ``response.<field>``; None where an earlier damage spoiled it."""
    inner = response.get("response")
    if not isinstance(inner, dict) or not isinstance(inner.get(field), str):
        return None
    try:
        return b64url_decode(inner[field])
    except ValueError:
        return None


def raw(field: str, data: bytes) -> Damage:
    """``response.<field>`` replaced by the base64url of ``data``."""

    def change(response: dict[str, Any]) -> None:
        inner = response.get("response")
        if isinstance(inner, dict):
            inner[field] = b64url(data)

    return Damage(f"response.{field} = {data[:40]!r}", change)


def _edit_bytes(data: bytes, edits: list[Edit]) -> bytes:
    out = bytearray(data)
    for kind, where, chunk in edits:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= chunk[0] or 1
        elif kind == "insert":
            out[at:at] = chunk
        elif kind == "delete":
            del out[at : at + len(chunk)]
        elif kind == "cut":
            del out[at:]
    return bytes(out)


def _bytes_edit(field: str, edits: list[Edit]) -> Damage:
    def change(response: dict[str, Any]) -> None:
        data = _field(response, field)
        if data is not None:
            response["response"][field] = b64url(_edit_bytes(data, edits))

    return Damage(f"response.{field} bytes: {edits}", change)


# -- clientDataJSON -----------------------------------------------------------------------------

_CLIENT_DATA_KEYS = ["type", "challenge", "origin", "crossOrigin", "tokenBinding", "topOrigin"]


def client_data_member(key: str, value: Any) -> Damage:
    """A member of the decoded ``clientDataJSON`` deleted or set to the JSON ``value``."""

    def change(response: dict[str, Any]) -> None:
        try:
            data = json.loads(_field(response, "clientDataJSON") or b"")
        except ValueError:
            return
        if isinstance(data, dict):
            _set(data, key, value)
            response["response"]["clientDataJSON"] = b64url(json.dumps(data).encode())

    return Damage(_describe(f"clientDataJSON.{key}", value), change)


def _client_data_whole(value: Any) -> Damage:
    def change(response: dict[str, Any]) -> None:
        if _field(response, "clientDataJSON") is not None:
            response["response"]["clientDataJSON"] = b64url(json.dumps(value).encode())

    return Damage(f"clientDataJSON = {value!r}", change)


_CLIENT_DATA_DAMAGE = st.one_of(
    st.builds(
        client_data_member,
        st.sampled_from(_CLIENT_DATA_KEYS),
        st.one_of(st.just(DELETE), JSON_VALUES),
    ),
    st.builds(_client_data_whole, JSON_VALUES),
)

# -- authenticator data (WebAuthn section 6.1) --------------------------------------------------

AuthDataChange = tuple[str, Callable[[bytes], bytes]]
_KEY_AT = 55  # rpIdHash 32, flags 1, signCount 4, aaguid 16, credentialIdLength 2


def _cose_start(data: bytes) -> int | None:
    if len(data) <= _KEY_AT:
        return None
    return _KEY_AT + int.from_bytes(data[_KEY_AT - 2 : _KEY_AT], "big")


def _flags(value: int) -> AuthDataChange:
    return f"flags = {value:#04x}", lambda data: data[:32] + bytes((value,)) + data[33:]


def _count(value: int) -> AuthDataChange:
    return f"signCount = {value}", lambda data: data[:33] + value.to_bytes(4, "big") + data[37:]


def _id_length(value: int) -> AuthDataChange:
    def change(data: bytes) -> bytes:
        if len(data) <= _KEY_AT:
            return data
        return data[: _KEY_AT - 2] + value.to_bytes(2, "big") + data[_KEY_AT:]

    return f"credentialIdLength = {value}", change


def _cose(key: int, value: Any) -> AuthDataChange:
    def change(data: bytes) -> bytes:
        start = _cose_start(data)
        if start is None:
            return data
        try:
            key_map = cbor2.loads(data[start:])
        except Exception:  # not there, or spoiled by an earlier damage: leave it
            return data
        if not isinstance(key_map, dict):
            return data
        _set(key_map, key, value)
        return data[:start] + cbor2.dumps(key_map)

    return _describe(f"COSE key {key}", value), change


def _cose_whole(value: Any) -> AuthDataChange:
    def change(data: bytes) -> bytes:
        start = _cose_start(data)
        return data if start is None else data[:start] + cbor2.dumps(value)

    return f"COSE key = {value!r}", change


def _trailing(value: Any) -> AuthDataChange:
    return f"trailing CBOR {value!r}", lambda data: data + cbor2.dumps(value)


# The COSE key members (RFC 9052 section 7.1, RFC 9053): kty, alg, crv, x, y.
_COSE_KEYS = [1, 3, -1, -2, -3]
_AUTH_DATA_CHANGES: st.SearchStrategy[AuthDataChange] = st.one_of(
    st.builds(_flags, st.integers(min_value=0, max_value=255)),
    st.builds(_count, st.integers(min_value=0, max_value=2**32 - 1)),
    st.builds(_id_length, st.integers(min_value=0, max_value=2**16 - 1)),
    st.builds(_cose, st.sampled_from(_COSE_KEYS), st.one_of(st.just(DELETE), CBOR_VALUES)),
    st.builds(_cose_whole, CBOR_VALUES),
    st.builds(_trailing, CBOR_VALUES),
)

# -- the attestation object (WebAuthn section 6.5.4) -------------------------------------------


def _rebuild(what: str, edit: Callable[[dict[Any, Any]], None]) -> Damage:
    def change(response: dict[str, Any]) -> None:
        try:
            obj = cbor2.loads(_field(response, "attestationObject") or b"")
        except Exception:  # spoiled by an earlier damage: leave it
            return
        if isinstance(obj, dict):
            edit(obj)
            response["response"]["attestationObject"] = b64url(cbor2.dumps(obj))

    return Damage(what, change)


def attestation_member(key: str, value: Any) -> Damage:
    """``fmt``, ``attStmt`` or ``authData`` deleted or set to the CBOR ``value``."""
    return _rebuild(_describe(f"attestationObject.{key}", value), lambda obj: _set(obj, key, value))


def statement_member(key: str, value: Any) -> Damage:
    """A member of ``attStmt`` (``alg``, ``sig``, ``x5c`` ...) deleted or set to ``value``."""

    def edit(obj: dict[Any, Any]) -> None:
        if isinstance(obj.get("attStmt"), dict):
            _set(obj["attStmt"], key, value)

    return _rebuild(_describe(f"attStmt.{key}", value), edit)


def _auth_data(change: AuthDataChange) -> Damage:
    what, fn = change

    def edit(obj: dict[Any, Any]) -> None:
        if isinstance(obj.get("authData"), bytes):
            obj["authData"] = fn(obj["authData"])

    return _rebuild(f"authData: {what}", edit)


def cose_member(key: int, value: Any) -> Damage:
    """A member of the credential's COSE key, inside the attestation object's authenticator
    data, deleted or set to ``value``."""
    return _auth_data(_cose(key, value))


def _auth_data_bytes(edits: list[Edit]) -> Damage:
    def edit(obj: dict[Any, Any]) -> None:
        if isinstance(obj.get("authData"), bytes):
            obj["authData"] = _edit_bytes(obj["authData"], edits)

    return _rebuild(f"authData bytes: {edits}", edit)


_FORMATS = ["none", "packed", "fido-u2f", "tpm", "apple", "android-key", "android-safetynet", "x"]
_STATEMENT_KEYS = ["alg", "sig", "x5c", "ver", "certInfo", "pubArea"]
_ATTESTATION_DAMAGE = st.one_of(
    st.builds(
        attestation_member,
        st.sampled_from(["fmt", "attStmt", "authData"]),
        st.one_of(st.just(DELETE), CBOR_VALUES),
    ),
    st.builds(attestation_member, st.just("fmt"), st.sampled_from(_FORMATS)),
    st.builds(
        statement_member,
        st.sampled_from(_STATEMENT_KEYS),
        st.one_of(st.just(DELETE), CBOR_VALUES),
    ),
    st.builds(_auth_data, _AUTH_DATA_CHANGES),
    st.builds(_auth_data_bytes, _EDITS),
)


def _assertion_auth_data(change: AuthDataChange) -> Damage:
    what, fn = change

    def edit(response: dict[str, Any]) -> None:
        data = _field(response, "authenticatorData")
        if data is not None:
            response["response"]["authenticatorData"] = b64url(fn(data))

    return Damage(f"authenticatorData: {what}", edit)


# -- the two responses --------------------------------------------------------------------------

_TOP = [("id",), ("rawId",), ("type",), ("response",), ("authenticatorAttachment",)]
_TOP += [("clientExtensionResults",)]
_REGISTRATION_FIELDS = ["clientDataJSON", "attestationObject", "transports", "publicKey"]
_ASSERTION_FIELDS = ["clientDataJSON", "authenticatorData", "signature", "userHandle"]

registration_damage: st.SearchStrategy[Damage] = st.one_of(
    _json_damage(_TOP + [("response", field) for field in _REGISTRATION_FIELDS]),
    st.builds(_bytes_edit, st.sampled_from(["clientDataJSON", "attestationObject"]), _EDITS),
    _CLIENT_DATA_DAMAGE,
    _ATTESTATION_DAMAGE,
)
"""One damage to a ``RegistrationResponseJSON``."""

assertion_damage: st.SearchStrategy[Damage] = st.one_of(
    _json_damage(_TOP + [("response", field) for field in _ASSERTION_FIELDS]),
    st.builds(_bytes_edit, st.sampled_from(_ASSERTION_FIELDS[:3]), _EDITS),
    _CLIENT_DATA_DAMAGE,
    st.builds(_assertion_auth_data, _AUTH_DATA_CHANGES),
)
"""One damage to an ``AuthenticationResponseJSON``."""

"""The schema. Every change to it comes with an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("purpose", String(16), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),  # empty once retired (material destroyed)
    Column("kek_id", String(200), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("public_key", LargeBinary),  # signing keys: the Ed25519 public half, kept for good
    Column("retired_at", UtcDateTime),
)

users = Table(
    "users",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("display_name", String(200)),
    Column("email", String(320), index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The throttle of guessable codes (TOTP, HOTP): one budget per user, see services/throttle.py
    Column("otp_failures", Integer, nullable=False, server_default=text("0")),
    Column("otp_locked_until", UtcDateTime),
    Column("otp_suspended_at", UtcDateTime),
    # The opaque WebAuthn user handle (user.id in the ceremonies), made at the first registration
    Column("webauthn_handle", LargeBinary(64), index=True, unique=True),
    # Readiness: when the user last proved their backup codes were saved (by entering one), and
    # when they last ran a recovery drill
    Column("backup_codes_proven_at", UtcDateTime),
    Column("last_drill_at", UtcDateTime),
)

factors = Table(
    "factors",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("label", String(100)),
    # The OTP columns; NULL for factors without a secret (WebAuthn: see webauthn_credentials)
    Column("algorithm", String(8)),
    Column("digits", SmallInteger),
    Column("period", Integer),
    Column("secret", LargeBinary),
    Column("secret_key_id", Integer, ForeignKey("data_keys.id")),
    Column("last_step", BigInteger),
    Column("drift", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("last_used_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    # Email and SMS factors: the normalised address or E.164 number, and when it may get codes
    Column("destination", String(320)),
    Column("usable_after", UtcDateTime),
    # A changed destination gets no sign-in code until a code sent there is confirmed
    Column("destination_unconfirmed", Boolean, nullable=False, server_default=false()),
    Index(None, "user_id", "status"),
)

fallback_codes = Table(
    "fallback_codes",
    metadata,
    # The one current code of an email or SMS factor (a new one replaces it), as a keyed hash
    Column("factor_id", String(32), ForeignKey("factors.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("mac_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Index(None, "user_id"),
)

webauthn_credentials = Table(
    "webauthn_credentials",
    metadata,
    Column("factor_id", String(32), ForeignKey("factors.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("credential_id", LargeBinary(1023), nullable=False, index=True, unique=True),
    Column("public_key", LargeBinary, nullable=False),  # COSE_Key; public, so stored as is
    Column("sign_count", BigInteger, nullable=False),
    Column("aaguid", String(36), nullable=False),
    Column("transports", String(200), nullable=False),  # comma-separated, as the browser said
    Column("attestation_format", String(32), nullable=False),
    Column("backup_eligible", Boolean, nullable=False),
    Column("backed_up", Boolean, nullable=False),
    Column("discoverable", Boolean),  # the credProps extension's answer, when given
    Index(None, "user_id"),
)

webauthn_challenges = Table(
    "webauthn_challenges",
    metadata,
    # SHA-256 of the challenge: the browser sends the challenge back inside clientDataJSON
    Column("challenge_hash", LargeBinary(32), primary_key=True),
    Column("ceremony", String(16), nullable=False),  # "registration" or "authentication"
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE")),
    Column("user_verification", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

backup_codes = Table(
    "backup_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("mac_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Index(None, "user_id", "digest", unique=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("mac_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("operator_id", String(32), index=True),  # a personal token: actions are the operator's
)

# BIGINT everywhere but SQLite, where only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("event", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor_type", String(16), nullable=False),
    Column("actor_id", String(64)),
    Column("details", Text, nullable=False),
    # Personal data: erasable. The chain covers their keyed digest, not the values.
    Column("user_id", String(128)),
    Column("ip", String(64)),
    Column("user_agent", String(400)),
    Column("personal_digest", LargeBinary(32), nullable=False),
    # A keyed MAC of the whole record (personal fields by their digest), made when it is written.
    Column("record_mac", LargeBinary(32), nullable=False),
    Column("mac_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    # Set by the sealer: the position in the hash chain and the chain's digest up to here.
    Column("seq", BigInteger, unique=True),
    Column("chain_digest", LargeBinary(32)),
    Index(None, "user_id", "id"),
    Index(None, "occurred_at"),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_digest", LargeBinary(32), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("chain_digest", LargeBinary(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("signing_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)

# Notifications waiting to go out, one row per (event, channel), written in the transaction of the
# change they tell about (services/notifications.py). ``next_attempt_at`` is NULL once there is
# nothing left to do (delivered or given up), so the worker's index holds only live rows' times.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("event", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(320)),
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("failed_at", UtcDateTime),
    Column("last_error", String(500)),
    # A worker's lease on the row while it delivers it; no other worker claims it before then.
    Column("locked_until", UtcDateTime),
    Index(None, "event_id", "channel", unique=True),
    Index(None, "next_attempt_at"),
)


operators = Table(
    "operators",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, index=True, unique=True),
    Column("role", String(16), nullable=False),  # admin, helpdesk, auditor
    # The operator's own second factors live on a user record of this deployment
    Column("user_id", String(128), ForeignKey("users.id"), nullable=False, index=True, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime),
    # The console password's Argon2id hash (PHC string); never the password. NULL: none set yet
    Column("password_hash", String(256)),
)

trusted_contacts = Table(
    "trusted_contacts",
    metadata,
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "contact_id"),
)

recovery_cases = Table(
    "recovery_cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(20), nullable=False),
    Column("approval", String(16), nullable=False),  # "admins" or "contacts"
    Column("approvals_needed", Integer, nullable=False),
    Column("reason", String(500)),
    Column("requested_by", String(100), nullable=False),  # "operator:<id>", "api_key:<id>", ...
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("evidence", Text),  # JSON list of the checklist items the verifier checked
    Column("verified_by", String(100)),
    Column("waiting_until", UtcDateTime),
    # The temporary access pass: a keyed hash only, single use
    Column("pass_digest", LargeBinary(32)),
    Column("pass_mac_key_id", Integer, ForeignKey("data_keys.id")),
    Column("pass_expires_at", UtcDateTime),
    Column("pass_redeemed_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("closed_by", String(100)),
    Column("close_reason", String(500)),
    # An email/SMS code the user proved to hold inside the case (identity evidence, 0016)
    Column("fallback_verified_at", UtcDateTime),
    Column("fallback_factor_id", String(32)),
    Index(None, "user_id", "state"),
    Index(None, "state"),
)

recovery_approvals = Table(
    "recovery_approvals",
    metadata,
    Column(
        "case_id",
        String(32),
        ForeignKey("recovery_cases.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("approver", String(100), primary_key=True),  # "operator:<id>" or "contact:<user id>"
    Column("approved_at", UtcDateTime, nullable=False),
)

# Web sessions of the self-service pages (and, later, the console): the cookie holds a random
# 256-bit token, the database only its SHA-256 (docs/decisions/0012-web-sessions.md).
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_digest", LargeBinary(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # "portal"; "console" later
    Column("subject", String(128), nullable=False),  # the user id
    Column("csrf_secret", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),  # min(idle, absolute)
    Column("step_up_token", String(2048)),  # an assurance token, server-side only
    Column("step_up_expires_at", UtcDateTime),
    Index(None, "subject"),
    Index(None, "expires_at"),
)

portal_links = Table(
    "portal_links",
    metadata,
    Column("token_digest", LargeBinary(32), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
    Index(None, "expires_at"),
)

# Device tokens of the desktop authenticator (docs/decisions/0014-device-tokens-and-vault-backups):
# a credential of its own kind, good for one user's vault backups only. The token has no id part:
# it is found by its keyed hash (HMAC under the MAC key named in the row), never stored itself.
device_tokens = Table(
    "device_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("mac_key_id", Integer, ForeignKey("data_keys.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Index(None, "digest", unique=True),
    Index(None, "user_id"),
)

# The desktop vault's backups: opaque bytes (encrypted on the desktop; the server has no key), in
# numbered versions per user. The primary key (user_id, version) is what makes two racing uploads
# of one version impossible: the second insert fails and is answered 412.
vault_backups = Table(
    "vault_backups",
    metadata,
    Column("user_id", String(128), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Who uploaded it; no foreign key, so the record outlives nothing it names (tokens are revoked,
    # never deleted, except with their user, who takes the backups along)
    Column("device_token_id", String(32)),
    info={"backup_batch": 8},  # rows of up to vault_backup_max_bytes: few at a time in `backup`
)

# -- schema bookkeeping, apart from the data ---------------------------------------------------
# Like Alembic's own ``alembic_version``, this belongs to the schema, not to the deployment's data:
# it is not in ``metadata`` (so backups neither carry nor restore it; a restore's migrations write
# it), and only migrations write it (storage/database.py reads it; docs/decisions/0017).
schema_metadata = MetaData(naming_convention=metadata.naming_convention)

# One row: the oldest code that may run against this database. An expand migration leaves it
# alone; a contract migration raises it to its own revision and the release that brings it.
schema_compat = Table(
    "schema_compat",
    schema_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("oldest_code_revision", String(32), nullable=False),
    Column("oldest_code_release", String(32), nullable=False),
    CheckConstraint("id = 1", name="ck_schema_compat_one_row"),
)

"""The composition root: settings in, wired services out. The API and the CLI both start here."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import tomli_w
from sqlalchemy import Connection

from sparekey.crypto.keyring import KekResolver, Keyring
from sparekey.crypto.providers import (
    FileKeyProvider,
    KeyFile,
    KeyFileError,
    KeyProvider,
    KeyProviderError,
)
from sparekey.domain.models import SYSTEM, Caller, Scope
from sparekey.domain.ports import Clock, SystemClock
from sparekey.services.api_keys import ApiKeyService
from sparekey.services.assurance import AssuranceService
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.backup_codes import BackupCodeService
from sparekey.services.delivery import (
    CodeSender,
    CodeSenders,
    HttpGatewaySender,
    RetryPolicy,
    SmtpSender,
    TwilioSender,
)
from sparekey.services.device_tokens import DeviceTokenService
from sparekey.services.factors import FactorService
from sparekey.services.fallback import FallbackPolicy, FallbackService
from sparekey.services.keys import KeyManager
from sparekey.services.notifications import (
    DeliveryWorker,
    EmailSender,
    Outbox,
    Sender,
    WebhookSender,
)
from sparekey.services.operators import OperatorService
from sparekey.services.otp import OtpPolicy
from sparekey.services.ratelimit import Limit, RequestGuard, build_rate_limiter
from sparekey.services.readiness import ReadinessPolicy, ReadinessService
from sparekey.services.recovery import RecoveryPolicy, RecoveryService
from sparekey.services.sessions import SessionPolicy, SessionService
from sparekey.services.smtp import SmtpServer
from sparekey.services.throttle import Throttle, ThrottlePolicy
from sparekey.services.users import UserService
from sparekey.services.vault_backups import VaultBackupService
from sparekey.services.verification import VerificationService
from sparekey.services.webauthn import AuthenticatorDirectory, WebAuthnPolicy, WebAuthnService
from sparekey.settings import Settings, SettingsError
from sparekey.storage.database import Database, SchemaError, SchemaStatus, SchemaUpgrade
from sparekey.storage.keystore import SqlKeyStore
from sparekey.storage.outbox import OutboxMessage
from sparekey.storage.prepared import Unit

if TYPE_CHECKING:
    from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider

__all__ = [
    "InitResult",
    "Sparekey",
    "build_code_senders",
    "initialize",
    "kek_resolver",
    "migrate_schema",
]


class Sparekey:
    """Every service, wired once. Build with :meth:`open` after :func:`initialize`."""

    def __init__(self, *, settings: Settings, db: Database, keyring: Keyring, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.keyring = keyring
        self.clock = clock
        policy = OtpPolicy(
            totp_window=settings.totp_window,
            hotp_window=settings.hotp_window,
            resync_window=settings.resync_window,
        )
        self.outbox = Outbox(email=bool(settings.smtp_host), webhook=bool(settings.webhook_url))
        self.audit = Auditor(db=db, keyring=keyring, clock=clock, outbox=self.outbox)
        self.delivery = DeliveryWorker(
            db=db,
            clock=clock,
            senders=_senders(settings),
            lease_seconds=settings.notify_lease_seconds,
            max_attempts=settings.notify_max_attempts,
            interval=settings.notify_poll_seconds,
            retention=timedelta(days=settings.notify_retention_days),
            on_given_up=functools.partial(_record_given_up, self.audit),
        )
        self.code_senders = build_code_senders(settings, clock=clock)  # for email and SMS codes
        limiter = build_rate_limiter(settings.redis_url or None)
        self.guard = RequestGuard(
            limiter,
            clock=clock,
            per_api_key=_limit(settings.rate_limit_key_requests, settings.rate_limit_key_seconds),
            per_ip=_limit(settings.rate_limit_ip_requests, settings.rate_limit_ip_seconds),
        )
        self.keys = KeyManager(db=db, keyring=keyring, clock=clock, auditor=self.audit)
        self.users = UserService(db=db, clock=clock, auditor=self.audit)
        self.assurance = AssuranceService(
            keyring=keyring,
            clock=clock,
            auditor=self.audit,
            ttl=timedelta(seconds=settings.assurance_seconds),
        )
        self.webauthn = WebAuthnService(
            db=db,
            clock=clock,
            auditor=self.audit,
            policy=_webauthn_policy(settings, clock),
            assurance=self.assurance,
            on_sign_in=self._signed_in,
        )
        self.factors = FactorService(
            db=db,
            keyring=keyring,
            clock=clock,
            policy=policy,
            issuer=settings.issuer,
            pending_ttl=timedelta(seconds=settings.pending_factor_ttl_seconds),
            auditor=self.audit,
            assurance=self.assurance,
            describe=self.webauthn.describe,
        )
        self.backup_codes = BackupCodeService(
            db=db,
            keyring=keyring,
            clock=clock,
            count=settings.backup_code_count,
            auditor=self.audit,
            assurance=self.assurance,
        )
        self.throttle = Throttle(
            ThrottlePolicy(
                free_failures=settings.throttle_free_failures,
                base_delay_seconds=settings.throttle_base_delay_seconds,
                max_delay_seconds=settings.throttle_max_delay_seconds,
                suspend_after=settings.throttle_suspend_after,
            )
        )
        self.fallback = FallbackService(
            db=db,
            keyring=keyring,
            clock=clock,
            policy=_fallback_policy(settings),
            senders=self.code_senders,
            limiter=limiter,
            auditor=self.audit,
            assurance=self.assurance,
        )
        self.verification = VerificationService(
            db=db,
            keyring=keyring,
            clock=clock,
            policy=policy,
            backup_codes=self.backup_codes,
            throttle=self.throttle,
            auditor=self.audit,
            assurance=self.assurance,
            on_sign_in=self._signed_in,
            fallback=self.fallback,
        )
        self.readiness = ReadinessService(
            db=db,
            clock=clock,
            policy=ReadinessPolicy(require_proof=settings.backup_codes_require_proof),
            backup_codes=self.backup_codes,
            limiter=limiter,
            check_limit=Limit(requests=settings.drill_checks, per_seconds=settings.drill_seconds),
            auditor=self.audit,
        )
        self.api_keys = ApiKeyService(
            db=db,
            keyring=keyring,
            clock=clock,
            cache_seconds=settings.api_key_cache_seconds,
            auditor=self.audit,
        )
        self.operators = OperatorService(
            db=db, clock=clock, auditor=self.audit, api_keys=self.api_keys, limiter=limiter
        )
        self.recovery = RecoveryService(
            db=db,
            keyring=keyring,
            clock=clock,
            auditor=self.audit,
            policy=_recovery_policy(settings),
            assurance=self.assurance,
            backup_codes=self.backup_codes,
            fallback=self.fallback,
            throttle=self.throttle,
        )
        self.sessions = SessionService(
            db=db,
            clock=clock,
            auditor=self.audit,
            keyring=keyring,
            policy=SessionPolicy(
                idle=timedelta(seconds=settings.web_session_idle_seconds),
                lifetime=timedelta(seconds=settings.web_session_max_seconds),
                link_ttl=timedelta(seconds=settings.portal_link_seconds),
            ),
        )

        self.device_tokens = DeviceTokenService(
            db=db, keyring=keyring, clock=clock, auditor=self.audit, assurance=self.assurance
        )
        self.vault_backups = VaultBackupService(
            db=db,
            clock=clock,
            auditor=self.audit,
            max_bytes=settings.vault_backup_max_bytes,
            keep=settings.vault_backup_keep,
        )

    def _signed_in(self, unit: Unit, user_id: str, caller: Caller) -> None:
        """A successful sign-in, in its own transaction: cancels the user's open recovery."""
        self.recovery.cancel_on_sign_in(unit, user_id, caller)

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock | None = None) -> Sparekey:
        """Connect to an initialized deployment (see :func:`initialize`)."""
        clock = clock or SystemClock()
        db = open_database(settings)
        try:
            _require_usable(db.schema_status())
            keyring = Keyring(
                store=SqlKeyStore(db, clock),
                resolve=kek_resolver(settings),
                refresh_seconds=settings.key_refresh_seconds,
            )
        except BaseException:
            db.dispose()
            raise
        return cls(settings=settings, db=db, keyring=keyring, clock=clock)

    def new_kek(self, kind: str | None = None, *, label: str = "", key_id: str = "") -> KeyProvider:
        """Create a KEK to rotate to: a new key in the key file, a new key in the PKCS#11 token,
        or an existing AWS KMS key (made in AWS; ``key_id``)."""
        settings = self.settings
        kind = kind or self.keyring.wrapping_provider.kek_id.partition(":")[0]
        if kind == "file":
            return KeyFile(settings.resolved_key_file).add()
        if kind == "pkcs11":
            stamp = self.clock.now().strftime("%Y%m%dT%H%M%S")
            hsm = _pkcs11(settings, label=label or f"{settings.pkcs11_key_label}-{stamp}")
            hsm.create()
            return hsm
        if kind == "aws-kms":
            from sparekey.crypto.aws_kms_provider import AwsKmsKeyProvider

            if not key_id:
                raise KeyProviderError("name the new KMS key with --aws-kms-key-id")
            return AwsKmsKeyProvider(key_id=key_id, region=settings.aws_region)
        raise KeyProviderError(f"unknown key provider {kind!r}; use file, pkcs11 or aws-kms")

    def destroy_kek(self, kek_id: str, *, caller: Caller) -> None:
        """Remove a KEK no data key uses from its provider (the key file line, the token object)."""
        scheme = kek_id.partition(":")[0]
        if scheme == "file":
            key_file = KeyFile(self.settings.resolved_key_file)
            if key_file.find(kek_id) is None:
                raise KeyProviderError(f"the key file holds no KEK {kek_id}")
            destroy: Callable[[], None] = functools.partial(key_file.remove, kek_id)
        elif scheme == "pkcs11":
            provider = self.keyring.provider_for(kek_id)
            assert isinstance(provider, _pkcs11_class())
            destroy = provider.destroy
        else:
            raise KeyProviderError(
                f"{kek_id} is deleted in its own console (schedule the KMS key's deletion in AWS)"
            )
        self.keys.destroy_kek(kek_id, destroy, caller=caller)

    def close(self) -> None:
        self.delivery.stop()  # stops its thread if it runs, and closes the senders' connections
        self.db.dispose()


def _fallback_policy(settings: Settings) -> FallbackPolicy:
    sends = settings.fallback_send_seconds
    return FallbackPolicy(
        mode=settings.fallback_channels,
        digits=settings.fallback_code_digits,
        code_ttl=timedelta(seconds=settings.fallback_code_seconds),
        destination_wait=timedelta(seconds=settings.fallback_destination_wait_seconds),
        pending_ttl=timedelta(seconds=settings.pending_factor_ttl_seconds),
        per_user=Limit(requests=settings.fallback_sends_per_user, per_seconds=sends),
        per_destination=Limit(requests=settings.fallback_sends_per_destination, per_seconds=sends),
        default_region=settings.fallback_default_region or None,
        origin_host=urlsplit(settings.resolved_public_url).hostname or "localhost",
        app_name=settings.issuer,
    )


def _recovery_policy(settings: Settings) -> RecoveryPolicy:
    return RecoveryPolicy(
        checklist=settings.resolved_recovery_checklist,
        min_evidence=settings.recovery_min_evidence,
        admin_approvals=settings.recovery_admin_approvals,
        contact_approvals=settings.recovery_contact_approvals,
        waiting=timedelta(seconds=settings.recovery_waiting_seconds),
        case_lifetime=timedelta(days=settings.recovery_case_days),
        pass_lifetime=timedelta(seconds=settings.temporary_pass_seconds),
    )


def _webauthn_policy(settings: Settings, clock: Clock) -> WebAuthnPolicy:
    directory = None
    if settings.webauthn_mds_blob is not None or settings.webauthn_attestation == "direct":
        directory = _authenticator_directory(settings, clock)
    return WebAuthnPolicy(
        rp_id=settings.webauthn_rp_id,
        rp_name=settings.webauthn_rp_name or settings.issuer,
        origins=settings.resolved_webauthn_origins,
        user_verification=settings.webauthn_user_verification,
        resident_key=settings.webauthn_resident_key,
        attestation=settings.webauthn_attestation,
        aaguids=frozenset(settings.resolved_webauthn_aaguids),
        directory=directory,
        allow_synced=settings.webauthn_allow_synced,
        challenge_ttl=timedelta(seconds=settings.webauthn_challenge_seconds),
    )


def _authenticator_directory(settings: Settings, clock: Clock) -> AuthenticatorDirectory:
    """The FIDO Metadata Service BLOB the operator downloaded (read offline, verified here)."""
    from sparekey.services.fido_metadata import MetadataIndex

    if settings.webauthn_mds_blob is None or settings.webauthn_mds_root is None:
        raise SettingsError(
            "direct attestation needs webauthn_mds_blob (a FIDO Metadata Service BLOB file) and "
            "webauthn_mds_root (the PEM of the root it is signed under)"
        )
    try:
        root = settings.webauthn_mds_root.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read webauthn_mds_root: {exc}") from None
    return MetadataIndex.load(
        settings.webauthn_mds_blob, trust_root_pem=root, now=clock.now().date()
    )


def _limit(requests: int, seconds: float) -> Limit | None:
    return Limit(requests=requests, per_seconds=seconds) if requests else None


def _senders(settings: Settings) -> list[Sender]:
    senders: list[Sender] = []
    if settings.smtp_host:
        senders.append(
            EmailSender(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value(),
                starttls=settings.smtp_starttls,
                timeout=settings.notify_timeout_seconds,
                product=settings.issuer,
            )
        )
    if settings.webhook_url:
        senders.append(
            WebhookSender(
                url=settings.webhook_url,
                secret=settings.webhook_secret.get_secret_value().encode(),
                timeout=settings.notify_timeout_seconds,
            )
        )
    return senders


def build_code_senders(settings: Settings, *, clock: Clock) -> CodeSenders:
    """The senders of one-time codes these settings configure: email wherever SMTP is set up
    (the same server as the notifications), SMS through ``sms_provider``."""
    policy = RetryPolicy(
        timeout=settings.delivery_timeout_seconds, retries=settings.delivery_retries
    )
    email = None
    if settings.smtp_host:
        server = SmtpServer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            starttls=settings.smtp_starttls,
            timeout=settings.delivery_timeout_seconds,
        )
        email = SmtpSender(
            server=server, sender=settings.smtp_from, product=settings.issuer, clock=clock
        )
    sms: CodeSender | None = None
    if settings.sms_provider == "twilio":
        sms = TwilioSender(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_base_url,
            policy=policy,
        )
    elif settings.sms_provider == "http":
        headers = settings.sms_gateway_headers.get_secret_value()
        sms = HttpGatewaySender(
            url=settings.sms_gateway_url,
            method=settings.sms_gateway_method,
            headers=json.loads(headers) if headers else {},
            body=settings.sms_gateway_body,
            content_type=settings.sms_gateway_content_type,
            policy=policy,
        )
    return CodeSenders(email=email, sms=sms)


def _load_provider(settings: Settings) -> KeyProvider:
    """The configured provider, for a deployment whose KEK exists (see :func:`initialize`)."""
    if settings.key_provider == "pkcs11":
        return _pkcs11(settings)
    if settings.key_provider == "aws-kms":
        from sparekey.crypto.aws_kms_provider import AwsKmsKeyProvider

        return AwsKmsKeyProvider(key_id=settings.aws_kms_key_id, region=settings.aws_region)
    return FileKeyProvider.load(settings.resolved_key_file)


def _pkcs11(settings: Settings, *, token: str = "", label: str = "") -> Pkcs11KeyProvider:
    from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider

    token = token or settings.pkcs11_token_label
    if not token:
        raise KeyProviderError("set pkcs11_token_label to the label of the token holding the KEK")
    return Pkcs11KeyProvider(
        module=settings.pkcs11_module,
        token_label=token,
        pin=settings.pkcs11_pin.get_secret_value(),
        key_label=label or settings.pkcs11_key_label,
    )


def _pkcs11_class() -> type[Pkcs11KeyProvider]:
    from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider

    return Pkcs11KeyProvider


def open_database(settings: Settings) -> Database:
    """The deployment's database, as ``settings`` configure it."""
    return Database(settings.resolved_database_url, sqlite_cache_mb=settings.sqlite_cache_mb)


def kek_resolver(settings: Settings) -> KekResolver:
    """Opens the KEK a stored data key names, with the access these settings give: any key in
    the key file, any key in a reachable PKCS#11 token, any KMS key the credentials may use."""

    def resolve(kek_id: str) -> KeyProvider:
        scheme, _, rest = kek_id.partition(":")
        if scheme == "file":
            path = settings.resolved_key_file
            if not path.exists():
                raise KeyFileError(
                    f"key file {path} is missing but the database holds keys wrapped by it; "
                    "restore the key file from your backup"
                )
            found = KeyFile(path).find(kek_id)
            if found is None:
                raise KeyFileError(f"key file {path} does not hold the KEK {kek_id}")
            return found
        if scheme == "pkcs11":
            token, _, label = rest.rpartition(":")
            return _pkcs11(settings, token=token, label=label)
        if scheme == "aws-kms":
            from sparekey.crypto.aws_kms_provider import AwsKmsKeyProvider

            return AwsKmsKeyProvider(key_id=rest, region=settings.aws_region)
        raise KeyProviderError(f"the database names an unknown kind of KEK: {kek_id}")

    return resolve


def _provider_for_new_deployment(settings: Settings) -> KeyProvider:
    """The configured KEK for a deployment with no data keys yet, created if need be."""
    if settings.key_provider == "pkcs11":
        hsm = _pkcs11(settings)
        if not hsm.exists():
            hsm.create()
        return hsm
    if settings.key_provider == "aws-kms":
        return _load_provider(settings)  # the KMS key is created and kept in AWS
    key_path = settings.resolved_key_file
    if key_path.exists():
        return FileKeyProvider.load(key_path)
    return FileKeyProvider.create(key_path)


@dataclass(frozen=True, kw_only=True)
class InitResult:
    created: bool
    admin_token: str | None
    schema_note: str | None = None  # one line for the log: a newer schema, a pending contract


def _write_config(settings: Settings) -> None:
    path = settings.config_path
    if path.exists():
        return
    document = {
        "host": settings.host,
        "port": settings.port,
        "issuer": settings.issuer,
        "totp_window": settings.totp_window,
        "hotp_window": settings.hotp_window,
        "pending_factor_ttl_seconds": settings.pending_factor_ttl_seconds,
    }
    header = (
        "# Sparekey settings. Every key can be overridden by an environment variable\n"
        "# named SPAREKEY_<KEY> (for example SPAREKEY_PORT=8080).\n"
    )
    path.write_text(header + tomli_w.dumps(document), encoding="utf-8")


def initialize(settings: Settings, *, clock: Clock | None = None) -> InitResult:
    """Create what is missing: data directory, settings file, key file, schema, data keys, and
    (only for a deployment with no API key at all) a first admin API key. Safe to run again."""
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    _write_config(settings)
    db = open_database(settings)
    try:
        status = db.schema_status()
        fresh_schema = status.revision is None
        if status.behind:
            if not settings.auto_migrate:
                raise SchemaError(
                    f"{status.describe()}: run `sparekey migrate` (auto_migrate is off)"
                )
            status = db.upgrade().after
        _require_usable(status)
        if db.is_sqlite and db.url.database:
            os.chmod(db.url.database, 0o600)
        store = SqlKeyStore(db, clock)
        # A deployment that has keys reaches its KEKs by the ids stored with them; only a new
        # one uses (and creates) the configured KEK. A lost KEK is never replaced.
        provider = None if store.list_keys() else _provider_for_new_deployment(settings)
        keyring = Keyring(
            provider=provider,
            store=store,
            resolve=kek_resolver(settings),
            refresh_seconds=settings.key_refresh_seconds,
        )
        created = keyring.ensure_keys()
        app = Sparekey(settings=settings, db=db, keyring=keyring, clock=clock)
        if created:
            app.keys.record_created(created)
        token = None
        if not app.api_keys.list():
            token = app.api_keys.create(name="admin", scopes=[Scope.ADMIN]).token
        return InitResult(created=fresh_schema, admin_token=token, schema_note=_schema_note(status))
    finally:
        db.dispose()


def migrate_schema(settings: Settings, *, contract: bool = False) -> SchemaUpgrade:
    """``sparekey migrate``: apply the pending expand migrations (with ``contract``, every pending
    migration), whatever ``auto_migrate`` says. A database migrated by newer code is left as it
    is, if it still supports this code."""
    db = open_database(settings)
    try:
        status = db.schema_status()
        _require_usable(status, migrating=True)
        upgrade = db.upgrade(contract=contract)
        if db.is_sqlite and db.url.database:
            os.chmod(db.url.database, 0o600)
        return upgrade
    finally:
        db.dispose()


def _require_usable(status: SchemaStatus, *, migrating: bool = False) -> None:
    """Refuse, in one line, a database this code must not run against."""
    refusal = status.refusal()
    if refusal is not None:
        raise SchemaError(refusal)
    if status.behind and not migrating:
        raise SchemaError(f"{status.describe()}: run `sparekey migrate`")


def _schema_note(status: SchemaStatus) -> str | None:
    if status.ahead:
        return f"{status.describe()}; starting without migrating"
    return status.contracts_note()


def _record_given_up(auditor: Auditor, conn: Connection, message: OutboxMessage) -> None:
    """The audit record of a notification the worker gave up on, in that same transaction: the
    user was not told of a security change, which an operator should know and follow up."""
    user_id = json.loads(message.payload).get("user_id")
    details = {
        "notification": message.event,
        "channel": message.channel,
        "event_id": message.event_id,
        "attempts": message.attempts,
    }
    entry = AuditEntry(
        event="notification.given_up", outcome="failure", user_id=user_id, details=details
    )
    auditor.record(conn, entry, SYSTEM)

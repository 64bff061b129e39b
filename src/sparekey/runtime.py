"""The composition root: settings in, wired services out. The API and the CLI both start here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import tomli_w

from sparekey.crypto.keyring import Keyring
from sparekey.crypto.providers import (
    FileKeyProvider,
    KeyFileError,
    KeyProvider,
    KeyProviderError,
)
from sparekey.domain.models import Scope
from sparekey.domain.ports import Clock, SystemClock
from sparekey.services.api_keys import ApiKeyService
from sparekey.services.audit import Auditor
from sparekey.services.backup_codes import BackupCodeService
from sparekey.services.factors import FactorService
from sparekey.services.notifications import (
    DeliveryWorker,
    EmailSender,
    Outbox,
    Sender,
    WebhookSender,
)
from sparekey.services.otp import OtpPolicy
from sparekey.services.ratelimit import Limit, RequestGuard, build_rate_limiter
from sparekey.services.throttle import Throttle, ThrottlePolicy
from sparekey.services.users import UserService
from sparekey.services.verification import VerificationService
from sparekey.settings import Settings
from sparekey.storage.database import Database
from sparekey.storage.keystore import SqlKeyStore

if TYPE_CHECKING:
    from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider

__all__ = ["InitResult", "Sparekey", "initialize"]


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
        self.delivery = DeliveryWorker(
            db=db,
            clock=clock,
            senders=_senders(settings),
            lease_seconds=settings.notify_lease_seconds,
            max_attempts=settings.notify_max_attempts,
            interval=settings.notify_poll_seconds,
        )
        self.audit = Auditor(db=db, keyring=keyring, clock=clock, outbox=self.outbox)
        self.guard = RequestGuard(
            build_rate_limiter(settings.redis_url or None),
            clock=clock,
            per_api_key=_limit(settings.rate_limit_key_requests, settings.rate_limit_key_seconds),
            per_ip=_limit(settings.rate_limit_ip_requests, settings.rate_limit_ip_seconds),
        )
        self.users = UserService(db=db, clock=clock, auditor=self.audit)
        self.factors = FactorService(
            db=db,
            keyring=keyring,
            clock=clock,
            policy=policy,
            issuer=settings.issuer,
            pending_ttl=timedelta(seconds=settings.pending_factor_ttl_seconds),
            auditor=self.audit,
        )
        self.backup_codes = BackupCodeService(
            db=db,
            keyring=keyring,
            clock=clock,
            count=settings.backup_code_count,
            auditor=self.audit,
        )
        self.throttle = Throttle(
            ThrottlePolicy(
                free_failures=settings.throttle_free_failures,
                base_delay_seconds=settings.throttle_base_delay_seconds,
                max_delay_seconds=settings.throttle_max_delay_seconds,
                suspend_after=settings.throttle_suspend_after,
            )
        )
        self.verification = VerificationService(
            db=db,
            keyring=keyring,
            clock=clock,
            policy=policy,
            backup_codes=self.backup_codes,
            throttle=self.throttle,
            auditor=self.audit,
        )
        self.api_keys = ApiKeyService(
            db=db,
            keyring=keyring,
            clock=clock,
            cache_seconds=settings.api_key_cache_seconds,
            auditor=self.audit,
        )

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock | None = None) -> Sparekey:
        """Connect to an initialized deployment (see :func:`initialize`)."""
        clock = clock or SystemClock()
        db = Database(settings.resolved_database_url)
        provider = _load_provider(settings)
        keyring = Keyring(provider=provider, store=SqlKeyStore(db, clock))
        return cls(settings=settings, db=db, keyring=keyring, clock=clock)

    def close(self) -> None:
        self.db.dispose()


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


def _load_provider(settings: Settings) -> KeyProvider:
    """The configured provider, for a deployment whose KEK exists (see :func:`initialize`)."""
    if settings.key_provider == "pkcs11":
        return _pkcs11(settings)
    if settings.key_provider == "aws-kms":
        from sparekey.crypto.aws_kms_provider import AwsKmsKeyProvider

        return AwsKmsKeyProvider(key_id=settings.aws_kms_key_id, region=settings.aws_region)
    return FileKeyProvider.load(settings.resolved_key_file)


def _pkcs11(settings: Settings) -> Pkcs11KeyProvider:
    from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider

    if not settings.pkcs11_token_label:
        raise KeyProviderError("set pkcs11_token_label to the label of the token holding the KEK")
    return Pkcs11KeyProvider(
        module=settings.pkcs11_module,
        token_label=settings.pkcs11_token_label,
        pin=settings.pkcs11_pin.get_secret_value(),
        key_label=settings.pkcs11_key_label,
    )


def _provider_for_init(settings: Settings, *, has_keys: bool) -> KeyProvider:
    """Load the KEK, or create it when the deployment is new; never replace one that is lost."""
    if settings.key_provider == "pkcs11":
        hsm = _pkcs11(settings)
        if not hsm.exists():
            if has_keys:
                raise KeyProviderError(
                    f"the token holds no key {settings.pkcs11_key_label!r} but the database "
                    "holds keys wrapped by it; use the token (or its backup) that has it"
                )
            hsm.create()
        return hsm
    if settings.key_provider == "aws-kms":
        return _load_provider(settings)  # the KMS key is created and kept in AWS
    key_path = settings.resolved_key_file
    if key_path.exists():
        return FileKeyProvider.load(key_path)
    if has_keys:
        raise KeyFileError(
            f"key file {key_path} is missing but the database holds keys wrapped by it; "
            "restore the key file from your backup"
        )
    return FileKeyProvider.create(key_path)


@dataclass(frozen=True, kw_only=True)
class InitResult:
    created: bool
    admin_token: str | None


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
    db = Database(settings.resolved_database_url)
    try:
        fresh_schema = db.current_revision() is None
        db.migrate()
        if db.is_sqlite and db.url.database:
            os.chmod(db.url.database, 0o600)
        store = SqlKeyStore(db, clock)
        provider = _provider_for_init(settings, has_keys=bool(store.list_keys()))
        keyring = Keyring(provider=provider, store=store)
        keyring.ensure_keys()
        app = Sparekey(settings=settings, db=db, keyring=keyring, clock=clock)
        token = None
        if not app.api_keys.list():
            token = app.api_keys.create(name="admin", scopes=[Scope.ADMIN]).token
        return InitResult(created=fresh_schema, admin_token=token)
    finally:
        db.dispose()

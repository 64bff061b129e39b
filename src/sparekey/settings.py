"""One typed settings object, built once at start-up and passed into constructors.

Sources, highest priority first: explicit overrides (command-line options), ``SPAREKEY_*``
environment variables, ``sparekey.toml`` in the data directory, then the defaults below.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["CONFIG_FILE", "Settings", "SettingsError", "default_data_dir", "load_settings"]

CONFIG_FILE = "sparekey.toml"
_TWILIO_SID = {prefix: re.compile(prefix + "[0-9a-fA-F]{32}") for prefix in ("AC", "MG")}


class SettingsError(Exception):
    """Settings that cannot be used; the message is one line naming the setting."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sparekey", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPAREKEY_", extra="forbid", frozen=True)

    data_dir: Path
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means sparekey.db in the data directory"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = Field(default="", description="where users reach this server")
    issuer: str = Field(default="Sparekey", min_length=1, max_length=64)
    key_provider: Literal["file", "pkcs11", "aws-kms"] = "file"
    key_file: Path | None = None
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token_label: str = ""
    pkcs11_pin: SecretStr = SecretStr("")
    pkcs11_key_label: str = "sparekey-kek"
    aws_kms_key_id: str = ""
    aws_region: str = "us-east-1"
    totp_window: int = Field(default=1, ge=0, le=10, description="accepted steps either side")
    totp_max_drift: int = Field(default=3, ge=0, le=100, description="largest remembered drift")
    hotp_window: int = Field(default=10, ge=1, le=1000, description="HOTP look-ahead")
    resync_window: int = Field(default=100, ge=2, le=10_000, description="resync search range")
    pending_factor_ttl_seconds: int = Field(default=600, ge=30, le=86_400)
    assurance_seconds: int = Field(
        default=300,
        ge=30,
        le=3600,
        description="how long a verification's assurance token allows sensitive changes",
    )
    backup_code_count: int = Field(default=10, ge=5, le=30)
    backup_codes_require_proof: bool = Field(
        default=True, description="readiness: a set counts as saved once one code was entered"
    )
    drill_checks: int = Field(default=5, ge=1, le=100, description="per user per drill_seconds")
    drill_seconds: float = Field(default=900.0, gt=0, le=86_400)
    throttle_free_failures: int = Field(default=5, ge=1, le=20)
    throttle_base_delay_seconds: float = Field(default=1.0, gt=0, le=60)
    throttle_max_delay_seconds: float = Field(default=900.0, ge=1, le=86_400)
    throttle_suspend_after: int = Field(default=100, ge=10, le=100, description="NIST: at most 100")
    sqlite_cache_mb: int = Field(
        default=1024,
        ge=2,
        le=1_048_576,
        description="SQLite's page cache, bounding every connection of the process together",
    )
    redis_url: str = Field(default="", description="shares request limits between nodes")
    rate_limit_key_requests: int = Field(default=10_000, ge=0, description="0: no limit")
    rate_limit_key_seconds: float = Field(default=1.0, gt=0)
    rate_limit_ip_requests: int = Field(default=120, ge=0, description="0: no limit")
    rate_limit_ip_seconds: float = Field(default=60.0, gt=0)
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    webauthn_rp_id: str = Field(default="localhost", min_length=1, max_length=253)
    webauthn_rp_name: str = Field(default="", max_length=64, description="empty: the issuer")
    webauthn_origins: str = Field(
        default="", description="comma-separated origins; empty: this server's public URL"
    )
    webauthn_user_verification: Literal["required", "preferred", "discouraged"] = "preferred"
    webauthn_resident_key: Literal["required", "preferred", "discouraged"] = "preferred"
    webauthn_attestation: Literal["none", "direct"] = "none"
    webauthn_aaguids: str = Field(
        default="", description="comma-separated AAGUIDs allowed with direct attestation"
    )
    webauthn_mds_blob: Path | None = Field(
        default=None, description="a FIDO Metadata Service BLOB file (read offline)"
    )
    webauthn_mds_root: Path | None = Field(
        default=None, description="PEM of the root the BLOB must chain to (FIDO's own)"
    )
    webauthn_allow_synced: bool = Field(
        default=True, description="accept backup-eligible (synced) passkeys"
    )
    webauthn_challenge_seconds: int = Field(default=300, ge=30, le=3600)
    recovery_checklist: str = Field(
        default=(
            "government_id,video_call,known_phone_callback,manager_confirmation,employee_record,"
            "fallback_code"
        ),
        description="comma-separated evidence an operator may record as checked; "
        "`fallback_code` only once an email/SMS code was checked inside the case",
    )
    recovery_min_evidence: int = Field(default=2, ge=1, le=10)
    recovery_admin_approvals: int = Field(default=1, ge=1, le=5)
    recovery_contact_approvals: int = Field(default=2, ge=1, le=5)
    recovery_waiting_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)
    recovery_case_days: int = Field(default=7, ge=1, le=90)
    temporary_pass_seconds: int = Field(default=3600, ge=300, le=28_800)
    key_refresh_seconds: float = Field(
        default=5.0, ge=0, le=300, description="how soon every node uses a newly rotated data key"
    )
    web_session_idle_seconds: int = Field(
        default=1800, ge=60, le=86_400, description="a web session ends after this long unused"
    )
    web_session_max_seconds: int = Field(
        default=43_200, ge=300, le=7 * 86_400, description="and this long after it began"
    )
    portal_link_seconds: int = Field(default=300, ge=30, le=3600, description="portal links")
    vault_backup_max_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="the largest desktop vault backup accepted (larger: 413)",
    )
    vault_backup_keep: int = Field(
        default=10, ge=1, le=1000, description="vault backup versions kept per user (newest)"
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="proxies trusted for X-Forwarded-For/-Proto (comma-separated, or *)",
    )
    auto_migrate: bool = Field(
        default=True,
        description="init and serve create the schema or apply pending expand migrations; "
        "false: only `sparekey migrate` changes the schema (several nodes: migrate from one place)",
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="how long serve keeps an idle HTTP connection open; longer than the load "
        "balancer's idle timeout, or it may reuse a connection just as the node closes it",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(default=False, description="log every HTTP request")
    # Security notifications (services/notifications.py): email over SMTP, webhooks to the app.
    smtp_host: str = Field(default="", description="empty: no email is sent")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = Field(default="", description="empty: no SMTP login")
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_from: str = Field(default="", validate_default=True, description="the From address")
    webhook_url: str = Field(default="", description="empty: no webhooks")
    webhook_secret: SecretStr = Field(default=SecretStr(""), validate_default=True)
    run_worker: bool = Field(default=True, description="deliver notifications inside serve")
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    notify_lease_seconds: float = Field(default=300.0, gt=0, le=86_400, validate_default=True)
    notify_max_attempts: int = Field(default=12, ge=1, le=100)
    notify_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    notify_retention_days: int = Field(
        default=30, ge=1, le=3650, description="keep delivered and given-up notifications this long"
    )
    # One-time codes by email and SMS (services/delivery.py). Email codes use the smtp_* settings.
    sms_provider: Literal["none", "twilio", "http"] = Field(
        default="none", description="how text messages are sent; none: no SMS codes"
    )
    twilio_account_sid: str = Field(default="", validate_default=True, description="AC...")
    twilio_auth_token: SecretStr = Field(default=SecretStr(""), validate_default=True)
    twilio_from: str = Field(default="", description="an E.164 number or alphanumeric sender ID")
    twilio_messaging_service_sid: str = Field(
        default="", validate_default=True, description="MG...; used instead of twilio_from"
    )
    twilio_base_url: str = Field(default="https://api.twilio.com", description="Twilio's API")
    sms_gateway_url: str = Field(
        default="", validate_default=True, description="may hold {to}, {text}, {code}"
    )
    sms_gateway_method: Literal["POST", "GET"] = "POST"
    sms_gateway_headers: SecretStr = Field(
        default=SecretStr(""),
        description='a JSON object of extra headers, e.g. {"Authorization": "Bearer ..."}',
    )
    sms_gateway_content_type: Literal["application/json", "application/x-www-form-urlencoded"] = (
        "application/json"
    )
    sms_gateway_body: str = Field(
        default="", validate_default=True, description="the POST body; {to}, {text}, {code}"
    )
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="connect and read timeout of each code sent"
    )
    delivery_retries: int = Field(
        default=1, ge=0, le=5, description="repeats after a refused connection, 429 or 5xx"
    )
    # Email and SMS factors (services/fallback.py): a last resort, kept in their place.
    fallback_channels: Literal["disabled", "fallback_only", "allowed"] = Field(
        default="fallback_only",
        description="fallback_only: an email/SMS code signs in only a user with no other factor",
    )
    fallback_code_digits: int = Field(default=6, ge=6, le=8)
    fallback_code_seconds: int = Field(default=600, ge=60, le=3600, description="code lifetime")
    fallback_destination_wait_seconds: int = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        description="a changed or additional phone number or address gets no code this long",
    )
    fallback_sends_per_user: int = Field(default=5, ge=1, le=100, description="per send window")
    fallback_sends_per_destination: int = Field(default=3, ge=1, le=100)
    fallback_send_seconds: float = Field(default=900.0, gt=0, le=86_400, description="the window")
    fallback_default_region: str = Field(
        default="",
        pattern=r"^([A-Za-z]{2})?$",
        description="ISO country assumed for phone numbers given without +country code",
    )

    @field_validator("smtp_from")
    @classmethod
    def _sender_with_smtp(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("smtp_host") and not value:
            raise ValueError("must be set when smtp_host is set")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("notify_lease_seconds")
    @classmethod
    def _lease_outlasts_sends(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("notify_timeout_seconds")
        if timeout is not None and value < 6 * timeout:
            raise ValueError("must be at least 6 times notify_timeout_seconds")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_with_webhook(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("webhook_url") and len(value.get_secret_value()) < 16:
            raise ValueError("must be set, at least 16 characters, when webhook_url is set")
        return value

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_with_twilio(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("sms_provider") == "twilio" and not _TWILIO_SID["AC"].fullmatch(value):
            raise ValueError("must be your Account SID (AC and 32 hex digits) for twilio")
        return value

    @field_validator("twilio_auth_token")
    @classmethod
    def _token_with_twilio(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("sms_provider") == "twilio" and not value.get_secret_value():
            raise ValueError("must be set when sms_provider is twilio")
        return value

    @field_validator("twilio_messaging_service_sid")
    @classmethod
    def _twilio_sender(cls, value: str, info: ValidationInfo) -> str:
        if value and not _TWILIO_SID["MG"].fullmatch(value):
            raise ValueError("must be a Messaging Service SID (MG and 32 hex digits)")
        twilio = info.data.get("sms_provider") == "twilio"
        if twilio and not (value or info.data.get("twilio_from")):
            raise ValueError("set it, or twilio_from, when sms_provider is twilio")
        return value

    @field_validator("twilio_base_url")
    @classmethod
    def _twilio_is_http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("sms_gateway_url")
    @classmethod
    def _gateway_url(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("sms_provider") == "http" and not value:
            raise ValueError("must be set when sms_provider is http")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        problem = _template_problem(value, "application/x-www-form-urlencoded")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("sms_gateway_headers")
    @classmethod
    def _headers_are_json(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text:
            return value
        try:
            headers = json.loads(text)
        except ValueError:
            headers = None
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("must be a JSON object of header names to string values")
        return value

    @field_validator("sms_gateway_body")
    @classmethod
    def _gateway_body(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("sms_gateway_method") == "GET":
            if value:
                raise ValueError("must be empty with GET (put {to} and {text} in the URL)")
            return value
        if info.data.get("sms_provider") == "http" and not value:
            raise ValueError("must be set when sms_provider is http and the method is POST")
        problem = _template_problem(value, info.data.get("sms_gateway_content_type", ""))
        if problem:
            raise ValueError(problem)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sparekey.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "sparekey.key"

    @property
    def resolved_webauthn_origins(self) -> list[str]:
        given = [o.strip().rstrip("/") for o in self.webauthn_origins.split(",") if o.strip()]
        return given or [self.resolved_public_url]

    @property
    def resolved_recovery_checklist(self) -> tuple[str, ...]:
        return tuple(i.strip() for i in self.recovery_checklist.split(",") if i.strip())

    @property
    def resolved_webauthn_aaguids(self) -> list[str]:
        return [a.strip().lower() for a in self.webauthn_aaguids.split(",") if a.strip()]

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "::1", "localhost") else self.host
        return f"http://{host}:{self.port}"


def _template_problem(template: str, content_type: str) -> str | None:
    from sparekey.services.delivery import check_gateway_template  # pure; no I/O at import

    return check_gateway_template(template, content_type=content_type)


def load_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    """Settings for ``data_dir`` (or ``$SPAREKEY_DATA_DIR``, or the per-user default)."""
    resolved = data_dir or Path(os.environ.get("SPAREKEY_DATA_DIR") or default_data_dir())
    resolved = resolved.expanduser().resolve()

    class _Settings(Settings):
        model_config = SettingsConfigDict(toml_file=resolved / CONFIG_FILE)

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        loaded = _Settings(data_dir=resolved, **given)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise SettingsError(f"setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read {resolved / CONFIG_FILE}: {exc}") from None
    return Settings.model_construct(**loaded.model_dump())

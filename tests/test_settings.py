"""Settings: defaults, then sparekey.toml, then SPAREKEY_* variables, then explicit overrides."""

from pathlib import Path

import pytest

from sparekey.settings import SettingsError, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sparekey.toml").write_text('port = 9000\nissuer = "From file"\ntotp_window = 2\n')
    monkeypatch.setenv("SPAREKEY_ISSUER", "From env")
    settings = load_settings(tmp_path, totp_window=0)
    assert settings.port == 9000
    assert settings.issuer == "From env"
    assert settings.totp_window == 0
    assert settings.hotp_window == 10


def test_default_database_and_key_file_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/sparekey.db"
    assert settings.resolved_key_file == tmp_path.resolve() / "sparekey.key"
    assert settings.resolved_public_url == "http://localhost:8000"


def test_data_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAREKEY_DATA_DIR", str(tmp_path))
    assert load_settings().data_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("totp_windw = 1\n", "totp_windw"),
        ("port = 70000\n", "port"),
        ("port = \n", "cannot read"),
    ],
)
def test_bad_settings_files_name_the_problem(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "sparekey.toml").write_text(toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path)


ACCOUNT = "AC" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sms_provider": "twilio"}, "twilio_account_sid"),
        ({"sms_provider": "twilio", "twilio_account_sid": "AC123"}, "twilio_account_sid"),
        ({"sms_provider": "twilio", "twilio_account_sid": ACCOUNT}, "twilio_auth_token"),
        (
            {"sms_provider": "twilio", "twilio_account_sid": ACCOUNT, "twilio_auth_token": "t"},
            "twilio_messaging_service_sid: .*twilio_from",
        ),
        ({"twilio_messaging_service_sid": "MGnope"}, "twilio_messaging_service_sid"),
        ({"twilio_base_url": "api.twilio.com"}, "twilio_base_url"),
        ({"sms_provider": "http"}, "sms_gateway_url"),
        ({"sms_gateway_url": "ftp://sms.example"}, "sms_gateway_url"),
        ({"sms_gateway_url": "https://sms.example/?n={number}"}, "placeholder {number}"),
        ({"sms_gateway_headers": "[1, 2]"}, "sms_gateway_headers"),
        ({"sms_gateway_headers": '{"X-Key": 5}'}, "sms_gateway_headers"),
        ({"sms_provider": "http", "sms_gateway_url": "https://sms.example"}, "sms_gateway_body"),
        ({"sms_gateway_body": '{"to": {to}}'}, "not valid JSON"),
        ({"sms_gateway_method": "GET", "sms_gateway_body": "to={to}"}, "empty with GET"),
        ({"delivery_retries": 9}, "delivery_retries"),
        ({"sms_provider": "carrier-pigeon"}, "sms_provider"),
    ],
)
def test_incomplete_sms_settings_name_the_setting(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path, **overrides)


def test_sms_settings_from_the_file_and_secrets_kept_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "sparekey.toml").write_text(
        'sms_provider = "http"\n'
        'sms_gateway_url = "https://sms.example/send"\n'
        'sms_gateway_headers = \'{"Authorization": "Bearer gw-secret-token"}\'\n'
        'sms_gateway_content_type = "application/x-www-form-urlencoded"\n'
        'sms_gateway_body = "to={to}&text={text}"\n'
    )
    settings = load_settings(tmp_path, twilio_auth_token="twilio-secret-token")
    assert settings.sms_provider == "http"
    assert settings.delivery_retries == 1
    assert "gw-secret-token" not in repr(settings)
    assert "twilio-secret-token" not in repr(settings)


def test_sms_is_off_by_default(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert (settings.sms_provider, settings.twilio_base_url) == ("none", "https://api.twilio.com")

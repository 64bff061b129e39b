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

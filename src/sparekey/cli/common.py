"""What every ``sparekey`` command shares: the data-dir option, one-line errors, opening a
deployment, and the operator the command line acts as."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from sparekey.crypto.providers import KeyProviderError
from sparekey.domain.errors import SparekeyError
from sparekey.domain.models import Caller
from sparekey.runtime import Sparekey
from sparekey.settings import SettingsError, load_settings
from sparekey.storage.database import SchemaError

__all__ = ["OPERATOR", "DataDir", "fail", "friendly_errors", "open_sparekey"]

OPERATOR = Caller(type="operator", id="cli")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="SPAREKEY_DATA_DIR",
        help="Where the database, key file and sparekey.toml live.",
        show_default=False,
    ),
]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> None:
    typer.echo(f"sparekey: error: {message}", err=True)
    raise typer.Exit(1)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (SettingsError, KeyProviderError, SparekeyError, SchemaError) as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            fail(f"database: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")
        except OSError as exc:
            fail(str(exc))
        raise AssertionError("unreachable")

    return wrapper


def open_sparekey(data_dir: Path | None) -> Sparekey:
    settings = load_settings(data_dir)
    if settings.key_provider == "file" and not settings.resolved_key_file.exists():
        raise SettingsError(f"no Sparekey deployment in {settings.data_dir}; run `sparekey init`")
    return Sparekey.open(settings)

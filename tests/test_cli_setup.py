"""The set-up commands (org create|list, app create|list|delete) against a live server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli_client import APP_ID, Live, clean_env, live, run, web_build

__all__ = ["clean_env", "live"]  # fixtures used by name below


def one_json_line(output: str) -> object:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return json.loads(lines[0])


def test_org_create_and_list(live: Live) -> None:
    created = run(live, "org", "create", "Second org", "--json")
    assert created.exit_code == 0, created.output
    org = one_json_line(created.stdout)
    assert isinstance(org, dict) and set(org) == {"id", "name"} and org["name"] == "Second org"

    listed = run(live, "org", "list", "--json")
    assert listed.exit_code == 0, listed.output
    orgs = one_json_line(listed.stdout)
    assert isinstance(orgs, list)
    assert {o["id"] for o in orgs} == {live.org_id, org["id"]}
    assert all(o["role"] == "super_admin" for o in orgs)

    table = run(live, "org", "list")
    assert table.exit_code == 0 and "Second org" in table.stdout and org["id"] in table.stdout
    human = run(live, "org", "create", "Third")
    assert human.exit_code == 0 and "Created organization Third with id" in human.stdout
    assert "otameter app create" in human.stderr


def test_app_create_list_delete(live: Live) -> None:
    org = one_json_line(run(live, "org", "create", "Apps", "--json").stdout)
    assert isinstance(org, dict)
    created = run(live, "app", "create", "com.example.two", "--org", org["id"], "--name", "Two")
    assert created.exit_code == 0, created.output
    assert "Created app com.example.two (Two)" in created.stdout

    all_apps = one_json_line(run(live, "app", "list", "--json").stdout)
    assert isinstance(all_apps, list)
    assert sorted(a["app_id"] for a in all_apps) == [APP_ID, "com.example.two"]
    only = one_json_line(run(live, "app", "list", "--org", org["id"], "--json").stdout)
    assert only == [a for a in all_apps if a["app_id"] == "com.example.two"]
    table = run(live, "app", "list")
    assert table.exit_code == 0 and "Apps" in table.stdout and "com.example.two" in table.stdout

    again = run(live, "app", "create", "com.example.two", "--org", org["id"])
    assert again.exit_code == 6 and "already exists" in again.stderr
    bad = run(live, "app", "create", "not an id", "--org", org["id"])
    assert bad.exit_code == 2 and "reverse-domain" in bad.stderr
    unknown_org = run(live, "app", "create", "com.example.three", "--org", "nope")
    assert unknown_org.exit_code == 5 and "otameter org list" in unknown_org.stderr

    # Without --force nothing is deleted (no terminal to confirm on).
    refused = run(live, "app", "delete", "com.example.two", input="n\n")
    assert refused.exit_code == 1 and "not confirmed" in refused.stderr
    deleted = run(live, "app", "delete", "com.example.two", "--force")
    assert deleted.exit_code == 0, deleted.output
    left = one_json_line(run(live, "app", "list", "--json").stdout)
    assert isinstance(left, list) and [a["app_id"] for a in left] == [APP_ID]
    gone = run(live, "app", "delete", "com.example.two", "--force")
    assert gone.exit_code == 5


def test_unknown_app_says_how_to_create_it(live: Live, tmp_path: Path) -> None:
    folder = web_build(tmp_path, "x")
    result = run(live, "bundle", "upload", str(folder), "--app", "com.nowhere.app", "-v", "1.0.0")
    assert result.exit_code == 5
    assert "App not found" in result.stderr
    assert "otameter app create APP_ID --org ORG_ID" in " ".join(result.stderr.split())


def test_help_lists_exit_codes_and_completion_is_on(live: Live) -> None:
    for command in (["org", "create"], ["org", "list"], ["app", "create"], ["app", "delete"]):
        helped = run(None, *command, "--help")
        assert helped.exit_code == 0 and "Exit codes" in helped.stdout, command
    assert "--install-completion" in run(None, "--help").stdout
    # set-plan (an admin command on the database) stays in the org group.
    assert "set-plan" in run(None, "org", "--help").stdout

"""Every command fails one way (``cli/errors.fail``): ``error: MESSAGE`` on stderr, as
written, and its exit code. These are the commands that open the database themselves; the
client commands' error lines are tested with them (test_cli_client.py, test_client.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from otameter.cli import app as cli


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/otameter.db"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


def test_database_commands_fail_with_their_message_and_code(db: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    rejected = tmp_path / "events.jsonl"
    rejected.write_text('{"id": "e1", "app_id": "com.nope.app"}\n')
    for args, code, line in (
        (
            ("plan", "create", "small", "--mau", "abc", "--storage", "1", "--bandwidth", "1"),
            2,
            "error: --mau: not a quantity: 'abc' (use e.g. 1000, 500MB, 1GB, 2GiB)",
        ),
        (
            ("org", "set-plan", "00000000-0000-0000-0000-000000000000", "nope"),
            1,
            "error: no organization 00000000-0000-0000-0000-000000000000",
        ),
        (("user", "create", "--email", "bad"), 1, "error: not an email address: 'bad'"),
        (("import", str(missing)), 2, f"error: no such file: {missing}"),
        (("import", str(rejected)), 1, "error: every line was rejected, nothing was imported"),
    ):
        exit_code, _, stderr = run(*args, "--db", db)
        assert (exit_code, stderr) == (code, line + "\n"), args


def test_an_error_line_is_printed_as_written(db: str, tmp_path: Path) -> None:
    """Longer than the terminal, it stays one line; brackets are text, not markup."""
    code, _, stderr = run("serve", "--max-bundle-size", "lots", "--db", db)
    assert (code, stderr) == (
        2,
        "error: --max-bundle-size: not a quantity: 'lots' (use e.g. 1000, 500MB, 1GB, 2GiB)\n",
    )
    missing = tmp_path / "[bold]events[/bold].jsonl"
    assert run("import", str(missing), "--db", db) == (2, "", f"error: no such file: {missing}\n")

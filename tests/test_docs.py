"""docs/ARCHITECTURE.md against the code: every module, package, name and command it cites
exists, and every module of the package is in its map.

After sqlite-utils' tests/test_docs.py, which checks its documentation against the code the
same way: a rename that forgets the docs fails here instead of misleading a reader.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import otameter
from otameter.storage import schema

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(otameter.__file__).resolve().parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
TEXT = ARCHITECTURE.read_text()
# Code spans; a span may wrap onto the next line.
SPANS = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", TEXT)]

# A path: one of the package (`metering/fold.py`, `api/`) or of the repository (`tests/...`).
PATH = re.compile(r"^[\w./-]*\w(\.py|/)$")
REPOSITORY_DIRS = ("src/", "tests/", "bench/", "docs/", "deploy/")
# A name in a module or a class: `checkin_log.consume`, `Writer.append`.
DOTTED = re.compile(r"^([A-Za-z_]\w*)\.([A-Za-z_]\w*)$")


def path_of(span: str) -> Path:
    return ROOT / span if span.startswith(REPOSITORY_DIRS) else PACKAGE / span


def package_modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        # Migration scripts are the migrations' own business; __init__ and __main__ files
        # belong to their package.
        if "migrations" in relative.parts or path.name in {"__init__.py", "__main__.py"}:
            continue
        yield relative


def module_name(relative: Path) -> str:
    return "otameter." + ".".join(relative.with_suffix("").parts)


def modules_by_basename() -> dict[str, list[ModuleType]]:
    found: dict[str, list[ModuleType]] = {}
    for relative in package_modules():
        module = importlib.import_module(module_name(relative))
        found.setdefault(relative.stem, []).append(module)
    return found


def classes_by_name(modules: dict[str, list[ModuleType]]) -> dict[str, list[type]]:
    found: dict[str, list[type]] = {}
    for group in modules.values():
        for module in group:
            for name, value in vars(module).items():
                if inspect.isclass(value) and value.__module__ == module.__name__:
                    found.setdefault(name, []).append(value)
    return found


def has_member(cls: type, name: str) -> bool:
    """A class attribute, or an instance attribute its code assigns (``self.name = ...``)."""
    if hasattr(cls, name) or name in getattr(cls, "__annotations__", {}):
        return True
    return re.search(rf"\bself\.{name}\s*[:=]", inspect.getsource(cls)) is not None


def test_every_path_the_architecture_names_exists() -> None:
    paths = sorted({span for span in SPANS if PATH.match(span)})
    assert len(paths) > 40  # the module map is read, not skipped
    missing = [span for span in paths if not path_of(span).exists()]
    assert missing == [], f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_module_of_the_package_is_in_the_map() -> None:
    named = {span for span in SPANS if PATH.match(span)}
    absent = []
    for relative in package_modules():
        packages = {f"{'/'.join(relative.parts[:n])}/" for n in range(1, len(relative.parts))}
        if relative.as_posix() not in named and not packages & named:
            absent.append(relative.as_posix())
    assert absent == [], f"modules missing from the map in ARCHITECTURE.md: {absent}"


def test_every_module_or_class_member_the_architecture_names_exists() -> None:
    modules = modules_by_basename()
    classes = classes_by_name(modules)
    columns = {
        (table.name, column.name)
        for table in schema.metadata.tables.values()
        for column in table.columns
    }
    checked, missing = 0, []
    for span in sorted(set(SPANS)):
        match = DOTTED.match(span)
        if match is None or PATH.match(span):
            continue
        owner, member = match.groups()
        if owner in modules:
            ok = any(hasattr(module, member) for module in modules[owner])
        elif owner in classes:
            ok = any(has_member(cls, member) for cls in classes[owner])
        else:
            continue  # not a name of the code (a file name, a JSON field)
        # `bundles.storage`, `devices.id`: a table's column, where a module has the same name.
        ok = ok or (owner, member) in columns
        checked += 1
        if not ok:
            missing.append(span)
    assert checked > 15
    assert missing == [], f"ARCHITECTURE.md names members that do not exist: {missing}"


def otameter_commands() -> list[list[str]]:
    commands = set()
    for span in SPANS:
        if span.startswith("otameter "):
            words = shlex.split(span)[1:]
            # `FILE`, `N`: placeholders for what the reader supplies.
            commands.add(tuple("x" if word.isupper() else word for word in words))
    return [list(words) for words in sorted(commands)]


def console_script() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        entry: str = tomllib.load(f)["project"]["scripts"]["otameter"]
    return entry


@pytest.mark.parametrize("words", otameter_commands(), ids=" ".join)
def test_every_command_the_architecture_names_exists(
    words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run as the console script runs it: an unknown command or option exits with 2, --help
    # after a command that exists (and the options given) with 0.
    module, function = console_script().split(":")
    main = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", ["otameter", *words, "--help"])
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        gc.unfreeze()  # the command freezes the objects it leaves for its exit
    assert exited.value.code in (0, None), capsys.readouterr()


def test_the_commands_are_read() -> None:
    assert len(otameter_commands()) >= 5

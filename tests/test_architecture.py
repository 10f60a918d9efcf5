"""The tree's structure: dependencies point one way, and clients are built only in resources/.

Every import of every module is read from its syntax tree, including imports inside functions,
so a deferred import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the project packages it may import (besides itself). Third-party imports are free,
# except that the library never imports Dagster.
ALLOWED: dict[str, set[str]] = {
    "mallard": set(),
    "catalog": {"mallard"},
    "resources": {"mallard", "catalog"},
    "assets": {"mallard", "catalog", "resources"},
    "sensors": {"mallard", "catalog", "resources", "assets"},
    "pipelines": {"mallard", "catalog", "resources", "assets", "sensors"},
    "cli": {"mallard", "catalog", "resources", "assets", "sensors", "pipelines"},
}
PROJECT = set(ALLOWED) | {"tests", "benchmarks"}
FORBIDDEN_THIRD_PARTY = {"mallard": {"dagster", "dagster_duckdb", "dagster_mlflow"}}

# Constructors of clients that only resources/ (and the library itself) may call.
CLIENT_CONSTRUCTORS = {
    "LLMClient",
    "PromptRegistry.default",
    "open_online_store",
    "SqliteOnlineStore",
    "RedisOnlineStore",
    "AlertSink",
    "TraceRecorder",
}
DEPLOYMENT = ("catalog", "assets", "sensors", "pipelines", "cli")
# Reading a MALLARD_* variable (setting one, as the demo does for its runs, is not reading).
ENV_READ = re.compile(r'(environ\.get|getenv)\(\s*"MALLARD_|environ\["MALLARD_\w*"\](?!\s*=)')


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level module name) of every import in a file, wherever it is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _calls(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node.lineno, _call_name(node)


def test_every_package_is_checked() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages <= PROJECT, f"packages without a declared direction: {packages - PROJECT}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if (name in PROJECT and name not in allowed)
        or name in FORBIDDEN_THIRD_PARTY.get(package, set())
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from catalog.features import REGISTRY\n    import dagster\n")
    assert [name for _, name in _imports(module)] == ["catalog", "dagster"]


@pytest.mark.parametrize("package", DEPLOYMENT)
def test_clients_are_built_only_in_resources(package: str) -> None:
    built = [
        f"{path.relative_to(ROOT)}:{line} calls {name}("
        for path in _modules(package)
        for line, name in _calls(path)
        if name in CLIENT_CONSTRUCTORS
    ]
    assert not built, "get these clients from a resource (resources/):\n" + "\n".join(built)


def test_duckdb_is_opened_only_by_mallard_lake() -> None:
    lake = ROOT / "mallard" / "lake"
    opened = []
    for package in sorted(PROJECT):
        for path in _modules(package):
            if lake in path.parents:
                continue
            for line, name in _calls(path):
                if name == "duckdb.connect":
                    opened.append(f"{path.relative_to(ROOT)}:{line}")
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module == "duckdb"
                    and any(alias.name == "connect" for alias in node.names)
                ):
                    opened.append(f"{path.relative_to(ROOT)}:{node.lineno} imports connect")
    assert not opened, "open DuckDB with mallard.lake.connect:\n" + "\n".join(opened)


def test_settings_are_read_only_through_mallard_config() -> None:
    """No module reads a MALLARD_* variable from the environment itself."""
    readers = []
    for package in ALLOWED:
        for path in _modules(package):
            if path == ROOT / "mallard" / "config.py":
                continue
            text = path.read_text()
            for number, line in enumerate(text.splitlines(), 1):
                if ENV_READ.search(line):
                    readers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not readers, "read settings through mallard.config:\n" + "\n".join(readers)


def test_the_env_check_tells_reading_from_setting() -> None:
    assert ENV_READ.search('x = os.environ.get("MALLARD_HOME")')
    assert ENV_READ.search('x = os.environ["MALLARD_HOME"]')
    assert not ENV_READ.search('os.environ["MALLARD_HOME"] = str(home)')

"""Dependencies run one way: the API reads what orchestration writes, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

from orchestration.config.load import REPO_ROOT


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports, by module path."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


def test_orchestration_never_imports_the_serving_package():
    offenders = sorted(module for module, names in imported_packages("orchestration").items() if "serving" in names)

    assert offenders == []


def modules_run_by_name(package: str, prefix: str) -> dict[str, set[str]]:
    """Module names under `prefix` that `package` names in strings (`python -m tests.x`), by module path."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        names = {
            node.value for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(prefix)
        }
        if names:
            found[str(path.relative_to(REPO_ROOT))] = names
    return found


def test_the_benchmarks_neither_import_nor_run_anything_of_the_tests():
    offenders = sorted(module for module, names in imported_packages("bench").items() if "tests" in names)

    assert offenders == []
    assert modules_run_by_name("bench", "tests.") == {}


SYSTEM_PREFIXES = ("/tmp", "/dev", "/proc", "/usr", "/bin", "/etc")


def paths_outside_the_repository(path: Path) -> list[str]:
    """Absolute paths to existing files outside the repository, and `parents[n]` that climb out of it."""
    depth = len(path.relative_to(REPO_ROOT).parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/"):
            target = Path(node.value.split()[0]) if node.value.strip() else Path("/")
            outside = not target.is_relative_to(REPO_ROOT) and not node.value.startswith(SYSTEM_PREFIXES)
            if len(target.parts) > 2 and outside and _exists(target):
                found.append(f"line {node.lineno}: {node.value}")
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
                and node.slice.value >= depth):
            found.append(f"line {node.lineno}: parents[{node.slice.value}] climbs out of the repository")
    return found


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a URL path too long to be a file name
        return False


def test_tests_read_no_file_outside_the_repository():
    offenders = {
        str(path.relative_to(REPO_ROOT)): found
        for path in sorted((REPO_ROOT / "tests").rglob("*.py"))
        if (found := paths_outside_the_repository(path))
    }

    assert offenders == {}

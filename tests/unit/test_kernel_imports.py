"""The kernel never imports a service (DESIGN.md, "Which way the imports run"): services plug in by entry points."""

from __future__ import annotations

import ast
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[2] / "civicflow"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module the file imports, anywhere in it (also inside functions), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_module_of_the_kernel_imports_a_service() -> None:
    files = sorted(KERNEL.rglob("*.py"))
    assert any(f.name == "cli" or f.parent.name == "cli" for f in files), "the walk found the kernel's files"
    offenders = [
        f"{path.relative_to(KERNEL.parent)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module == "services" or module.startswith("services.")
    ]
    assert not offenders, (
        "the kernel must not import a service; give the service an entry point (civicflow.services or"
        " civicflow.commands) instead:\n" + "\n".join(offenders)
    )


def test_the_check_sees_an_import_hidden_inside_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f() -> None:\n    from services.router.lint import lint\n    import services.query\n")
    assert imported_modules(sample) == [(2, "services.router.lint"), (3, "services.query")]

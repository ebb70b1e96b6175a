"""Imports point one way: core `robolake` <- `schemas` <- the stages {`pipelines`,
`validation`, `training`, `exports`} <- `cli`. A stage never imports another stage:
stages talk through files in the lake. Imports inside functions count too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"robolake": 0, "schemas": 1, "pipelines": 2, "validation": 2, "training": 2, "exports": 2, "cli": 3}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def modules() -> list[Path]:
    return sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py"))


def violations(path: Path, root: Path = ROOT) -> list[str]:
    own = path.relative_to(root).parts[0]
    return [f"{path.relative_to(root)}:{line} imports {package}"
            for package, line in sorted(imported_packages(path))
            if package in LAYERS and package != own and LAYERS[package] >= LAYERS[own]]


def test_every_layer_exists():
    assert all((ROOT / package / "__init__.py").exists() for package in LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    assert violations(path) == []


def test_the_check_sees_an_upward_import(tmp_path):
    upward = tmp_path / "robolake" / "bad.py"
    upward.parent.mkdir()
    upward.write_text("def late():\n    from validation.gate import run\n")
    sideways = tmp_path / "training" / "bad.py"
    sideways.parent.mkdir()
    sideways.write_text("import pipelines.build\n")
    assert violations(upward, tmp_path) == ["robolake/bad.py:2 imports validation"]
    assert violations(sideways, tmp_path) == ["training/bad.py:1 imports pipelines"]

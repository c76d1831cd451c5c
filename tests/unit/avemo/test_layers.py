"""The layers hold: every import of every module (top-level or inside a function) checked against them.

    avemo.cli  ->  flows  ->  tasks  ->  models  ->  avemo (contracts and infrastructure)

``avemo`` (but its CLI) imports nothing above it; ``models`` imports only ``avemo``; ``tasks`` never
imports ``flows``; Prefect is imported in ``flows`` alone; the CLI imports ``flows`` and ``avemo`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from avemo.provenance import REPO_ROOT

REPO = REPO_ROOT
PACKAGES = ("avemo", "tasks", "flows", "models")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if module == "avemo.cli" or module.startswith("avemo.cli."):
        return "cli"
    return top


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALLOWED = {
    "avemo": {"avemo"},
    "models": {"avemo", "models"},
    "tasks": {"avemo", "models", "tasks"},
    "flows": {"avemo", "models", "tasks", "flows"},
    "cli": {"avemo", "flows", "cli"},
}
PREFECT = ("prefect", "prefect_dask")


def _violations(root: Path = REPO) -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            own = _layer(_module_name(path, root))
            for line, module in _imports(path):
                target = _layer(module)
                where = f"{path.relative_to(root)}:{line} imports {module}"
                if target in ALLOWED and target not in ALLOWED[own]:
                    problems.append(f"{where}: {own} may import only {sorted(ALLOWED[own])}")
                if module.split(".")[0] in PREFECT and own != "flows":
                    problems.append(f"{where}: only flows/ imports Prefect")
    return problems


def test_every_import_respects_the_layers() -> None:
    assert _violations() == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [("avemo.cli", "cli"), ("avemo.config", "avemo"), ("tasks.clip", "tasks"), ("prefect", "prefect")],
)
def test_modules_are_placed_in_their_layer(module: str, layer: str) -> None:
    assert _layer(module) == layer


def test_the_check_finds_an_upward_import_a_stray_prefect_and_a_cli_reaching_past_flows(tmp_path: Path) -> None:
    files = {
        "tasks/stage.py": "def run():\n    from flows.preprocess import run_preprocess\n",
        "models/net.py": "import prefect\n",
        "avemo/cli.py": "from tasks.clip import clip_features\n",
        "avemo/config.py": "import yaml\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _violations(tmp_path) == [
        "avemo/cli.py:1 imports tasks.clip: cli may import only ['avemo', 'cli', 'flows']",
        "tasks/stage.py:2 imports flows.preprocess: tasks may import only ['avemo', 'models', 'tasks']",
        "models/net.py:1 imports prefect: only flows/ imports Prefect",
    ]

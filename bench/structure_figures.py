"""Structure figures for issue 11's note, measured on a checkout (run from its root).

    .venv/bin/python bench/structure_figures.py [--root .]

- lines of non-test code: every git-tracked ``*.py`` outside tests/, hil_tests/, bench/,
  minus generated protobuf (``*_pb2.py``, ``*_pb2_grpc.py``) and vendored code
  (``edge/fieldbus/vendor/``), counted as ``wc -l`` counts them (physical lines);
- the longest module (same set);
- import cycles: strongly connected components of the module import graph (grimp, the
  graph import-linter uses) with more than one module, first-party packages only, with
  TYPE_CHECKING imports left out (they do not run) and function-level imports counted;
- document decode sites: functions (outside tests) that turn a desired-state document's
  bytes or JSON into a message or a model (calls below), grouped by enclosing function;
- service-locator chains (``self.app.``) and store lambda wrappers (``lambda c: store.``);
- classes that define ``__init__(self, field: str, reason: str)`` (field-error classes);
- exceptions to the import-linter contracts (``ignore_imports`` entries of pyproject.toml),
  and those that name an orchestrator module.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

DECODE = re.compile(
    r"(Schedule|SignalPlans|AccessList)\.FromString\(|json_format\.Parse\(|"
    r"schedule_from_proto\(|plans_from_proto\(|LocalAccessList\.from_proto\(|"
    r"message_type\.FromString\("
)
WITH_TYPE_CHECKING = False
EXCLUDE = re.compile(r"^(tests|hil_tests|bench)/|_pb2(_grpc)?\.pyi?$|^edge/fieldbus/vendor/")


def tracked(root: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    return [root / p for p in out if not EXCLUDE.search(p)]


def packages(root: Path) -> list[str]:
    return sorted(
        {p.relative_to(root).parts[0] for p in tracked(root) if len(p.relative_to(root).parts) > 1}
        & {d.name for d in root.iterdir() if (d / "__init__.py").exists()}
    )


def cycles(root: Path) -> list[list[str]]:
    import grimp

    sys.path.insert(0, str(root))
    graph = grimp.build_graph(
        *packages(root), cache_dir=None, exclude_type_checking_imports=not WITH_TYPE_CHECKING
    )
    mods = [m for m in graph.modules if ".v1." not in m]
    adj = {m: {n for n in graph.find_modules_directly_imported_by(m) if n in mods} for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(mods):
        if m not in index:
            visit(m)
    return found


def decode_sites(files: list[Path], root: Path) -> list[str]:
    sites = set()
    for path in files:
        text = path.read_text()
        if not DECODE.search(text):
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = ast.get_source_segment(text, node) or ""
                inner = [
                    n
                    for n in ast.walk(node)
                    if n is not node and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
                for sub in inner:  # count a call in the innermost function only
                    body = body.replace(ast.get_source_segment(text, sub) or "\0", "")
                converter = r"^\s*def (schedule_from_proto|plans_from_proto|from_proto)\b"
                if DECODE.search(body) and not re.search(converter, body):
                    sites.add(f"{path.relative_to(root)}:{node.name}")
    return sorted(sites)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args()
    root = args.root.resolve()
    files = tracked(root)
    sizes = sorted(((len(p.read_text().splitlines()), p) for p in files), reverse=True)
    total = sum(n for n, _ in sizes)
    print(f"lines of non-test code: {total} in {len(files)} modules")
    print("longest modules: " + ", ".join(f"{p.relative_to(root)} ({n})" for n, p in sizes[:3]))
    global WITH_TYPE_CHECKING
    WITH_TYPE_CHECKING = True
    with_tc = cycles(root)
    WITH_TYPE_CHECKING = False
    found = cycles(root)
    print(
        f"import cycles (module SCCs): {len(found)} ({len(with_tc)} counting TYPE_CHECKING"
        f" imports, largest {max((len(c) for c in with_tc), default=0)} modules)"
    )
    for comp in found:
        print("   " + " <-> ".join(comp))
    sites = decode_sites(files, root)
    print(f"functions that decode a document: {len(sites)}")
    for s in sites:
        print("   " + s)
    app = sum(p.read_text().count("self.app.") for p in files)
    lambdas = sum(len(re.findall(r"lambda (?:c|conn)\b", p.read_text())) for p in files)
    print(f"'self.app.' chains: {app}; 'lambda c' store wrappers: {lambdas}")
    field_errors = [
        f"{p.relative_to(root)}"
        for p in files
        if re.search(r"def __init__\(self, field: str, reason: str", p.read_text())
    ]
    print(f"modules defining a (field, reason) error class: {len(field_errors)}")
    pyproject = (root / "pyproject.toml").read_text()
    ignored = re.findall(r'^\s*"([\w.]+ -> [\w.]+)",', pyproject, re.MULTILINE)
    about = [i for i in ignored if "orchestrator" in i]
    print(f"import-linter exceptions: {len(ignored)} ({len(about)} naming the orchestrator)")


if __name__ == "__main__":
    main()

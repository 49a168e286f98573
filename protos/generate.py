"""Regenerate the Python code of the wire contract from protos/ondijon/v1/*.proto.

Run: ``python -m protos.generate`` (``make protos``); ``--check`` fails if the committed
generated code differs from what the sources give (CI runs it).

protoc writes absolute imports (``from ondijon.v1 import state_pb2``); the generated
modules live in the ``protos.ondijon.v1`` package, so those imports are rewritten to
package-absolute ones. Nothing else is edited.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "ondijon" / "v1"
_IMPORT = re.compile(r"^(import|from) ondijon\.v1(\.| import)", re.MULTILINE)


def _fix_imports(text: str) -> str:
    return _IMPORT.sub(lambda m: f"{m.group(1)} protos.ondijon.v1{m.group(2)}", text)


def generate(out_dir: Path) -> list[Path]:
    """Generate into ``out_dir`` (a copy of the tree rooted at protos/) and return the files."""
    sources = sorted(str(p.relative_to(ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    produced = sorted((out_dir / "ondijon" / "v1").glob("*_pb2*.py*"))
    for path in produced:
        path.write_text(_fix_imports(path.read_text()))
    return produced


def main(argv: list[str]) -> int:
    check = "--check" in argv
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = []
        for path in produced:
            target = PACKAGE_DIR / path.name
            if check:
                if not target.exists() or target.read_text() != path.read_text():
                    stale.append(path.name)
            else:
                shutil.copyfile(path, target)
        if check:
            wanted = {p.name for p in produced}
            stale += [p.name for p in PACKAGE_DIR.glob("*_pb2*.py*") if p.name not in wanted]
            if stale:
                print("generated code is stale, run `make protos`: " + ", ".join(sorted(stale)))
                return 1
            print(f"generated code is up to date ({len(produced)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The console's front-end libraries, copied from ``node_modules`` (installed by ``npm ci``
from ``package-lock.json``) into ``orchestrator/console/static/vendor``, so that they ship
inside the Python wheel: the console fetches nothing from the internet at run time.

``python -m orchestrator.console.assets`` copies them (``make console-assets``);
``--check`` fails when the committed copies differ from what the lock file installs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(__file__).resolve().parent / "static" / "vendor"

# package in node_modules -> the files of it the console serves (and its licence).
VENDORED: dict[str, tuple[str, ...]] = {
    "leaflet": (
        "dist/leaflet.js",
        "dist/leaflet.css",
        "dist/images/layers.png",
        "dist/images/layers-2x.png",
        "dist/images/marker-icon.png",
        "dist/images/marker-icon-2x.png",
        "dist/images/marker-shadow.png",
        "LICENSE",
    ),
    "leaflet.markercluster": (
        "dist/leaflet.markercluster.js",
        "dist/MarkerCluster.css",
        "dist/MarkerCluster.Default.css",
        "MIT-LICENCE.txt",
    ),
}


def pairs(node_modules: Path) -> list[tuple[Path, Path]]:
    """(source in node_modules, copy under static/vendor) for every vendored file."""
    out = []
    for package, files in VENDORED.items():
        for name in files:
            target = VENDOR / package / name.removeprefix("dist/")
            out.append((node_modules / package / name, target))
    return out


def differences(node_modules: Path) -> list[str]:
    """Vendored files missing or differing from node_modules."""
    return [
        str(target.relative_to(ROOT))
        for source, target in pairs(node_modules)
        if not target.exists() or target.read_bytes() != source.read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the copies are stale")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "node_modules")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.node_modules)
        for name in stale:
            print(f"stale: {name} (run `make console-assets`)", file=sys.stderr)
        return 1 if stale else 0
    for source, target in pairs(args.node_modules):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())

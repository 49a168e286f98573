"""``ondijon opendata export --out DIR``: the open data, written from the store.

    ondijon opendata export --config ORCH.toml --out /var/lib/ondijon/opendata

Run on the orchestrator's host (it reads the store the configuration names, read-only).
The export goes to ``DIR/exports/<stamp>/`` and becomes ``DIR/current`` only once every
file is written and synced: a half-written export never replaces the last good one. The
orchestrator also exports daily by itself with ``[public] export_dir`` and ``export_at``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from foundation.escaping import escape


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    opendata = sub.add_parser("opendata", help="open data: the export re-users download")
    o_sub = opendata.add_subparsers(dest="opendata_command", required=True)
    export = o_sub.add_parser(
        "export",
        help="write every dataset, its schemas and the DCAT-AP catalogue to DIR/current",
    )
    export.add_argument("--config", type=Path, required=True, help="the orchestrator's TOML")
    export.add_argument("--out", type=Path, required=True, help="the export directory")


def run(args: argparse.Namespace) -> int:
    from orchestrator.config import OrchestratorConfig
    from orchestrator.public.export import build_sync, publish
    from orchestrator.store.database import Store
    from orchestrator.wiring import publisher_of

    config = OrchestratorConfig.load(args.config)
    store = Store.open(config.store_url, config.store)
    try:
        started = time.monotonic()
        export = build_sync(store, publisher_of(config), datetime.now(UTC))
        path = publish(args.out, export)
    finally:
        store.close()
    size = sum(len(b) for b in export.files.values())
    print(
        f"open data: {len(export.files)} files, {size / 1e6:.1f} MB in "
        f"{time.monotonic() - started:.1f} s -> {escape(str(args.out / 'current'))} "
        f"({escape(path.name)})"
    )
    return 0

"""``ondijon city``, ``ondijon assets``, ``ondijon group`` and ``ondijon fleet``: the city's
operations (the City admin API).

    ondijon city generate --out city.csv [--seed N]     a Dijon-sized test city's inventory
    ondijon assets import FILE [--dry-run] [--yes]      diff, confirm, apply (CSV or GeoJSON)
    ondijon assets list [--kind K] [--commune C] [--json]
    ondijon group put KIND FILE.json TARGET             a document for every gateway of TARGET
    ondijon group remove KIND TARGET | list [--kind K]
    ondijon group effective GATEWAY KIND                where a gateway's document comes from
    ondijon group release GATEWAY KIND                  let group documents reach it again
    ondijon group convergence KIND [TARGET] [--json]    who holds it, who lags and why
    ondijon group override TARGET --level N --hours H   e.g. all lamps of Chenôve to 100 %
    ondijon group command BATCH                         progress of a group command
    ondijon fleet [--commune C] [--json]                the fleet, a page at a time

TARGET is one of ``--city``, ``--commune NAME``, ``--tag TAG``, ``--gateways A,B,...
--name N`` or ``--area POLYGON.geojson --name N``; precedence when several cover a gateway:
gateway > list > area > tag > commune > city.

Every text printed passes :func:`foundation.escaping.escape` (ids, communes and errors come
from operators, inventories and gateways).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from domain import documents
from domain.city.generator import generate
from domain.city.inventory import (
    InventoryError,
    check_inventory,
    read_inventory,
    to_csv,
    to_geojson,
)
from foundation.escaping import escape
from ondijon.admin import lamp_override
from ondijon.client import AdminClient, AdminError
from protos.ondijon.v1 import control_pb2, link_pb2
from provisioning.profile import Profile

CHUNK = 2000
# Seconds a call may take: a city-wide one (a document for 1,500 gateways, an import of
# 34,000 lamps) takes longer than one gateway's.
CITY_TIMEOUT_S = 120
_KIND_NUMBERS = {
    "lamp": control_pb2.ASSET_KIND_LAMP,
    "cabinet": control_pb2.ASSET_KIND_CABINET,
    "crossing": control_pb2.ASSET_KIND_CROSSING,
    "bollard_site": control_pb2.ASSET_KIND_BOLLARD_SITE,
}
_KIND_NAMES = {v: k for k, v in _KIND_NUMBERS.items()}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    city = sub.add_parser("city", help="a generated test city")
    city_sub = city.add_subparsers(dest="city_command", required=True)
    gen = city_sub.add_parser("generate", help="write a Dijon-sized city's inventory")
    gen.add_argument("--out", type=Path, required=True, help=".csv or .geojson")
    gen.add_argument("--seed", type=int, default=21000)
    gen.add_argument("--cabinets", type=int, default=1500)
    gen.add_argument("--lamps", type=int, default=34000)

    assets = sub.add_parser("assets", help="the asset register")
    a_sub = assets.add_subparsers(dest="assets_command", required=True)
    imp = _profile(a_sub.add_parser("import", help="import an inventory (shows the diff first)"))
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    imp.add_argument("--yes", action="store_true", help="apply without asking")
    lst = _profile(a_sub.add_parser("list", help="assets, a page at a time"))
    lst.add_argument("--kind", choices=sorted(_KIND_NUMBERS), default="")
    lst.add_argument("--commune", default="")
    lst.add_argument("--gateway", default="")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")

    group = sub.add_parser("group", help="documents and commands for groups of gateways")
    g_sub = group.add_subparsers(dest="group_command", required=True)
    kinds = [kind.name for kind in documents.KINDS]
    put = _target(_profile(g_sub.add_parser("put", help="assign a document to a target")))
    put.add_argument("kind", choices=kinds)
    put.add_argument("file", type=Path)
    remove = _target(_profile(g_sub.add_parser("remove", help="remove a target's document")))
    remove.add_argument("kind", choices=kinds)
    glist = _profile(g_sub.add_parser("list", help="group documents"))
    glist.add_argument("--kind", choices=kinds)
    glist.add_argument("--json", action="store_true")
    for name, text in (
        ("effective", "a gateway's document and where it comes from"),
        ("release", "let group documents reach a gateway that had its own"),
    ):
        p = _profile(g_sub.add_parser(name, help=text))
        p.add_argument("gateway_id")
        p.add_argument("kind", choices=kinds)
        p.add_argument("--json", action="store_true")
    conv = _target(_profile(g_sub.add_parser("convergence", help="who holds it, who lags")), False)
    conv.add_argument("kind", choices=kinds)
    conv.add_argument("--max-lagging", type=int, default=50)
    conv.add_argument("--json", action="store_true")
    override = _target(_profile(g_sub.add_parser("override", help="force lamps of a target")))
    override.add_argument("--level", type=int, required=True, help="0 to 100 %%")
    override.add_argument("--hours", type=float, default=1.0)
    override.add_argument("--priority", type=int, default=10)
    status = _profile(g_sub.add_parser("command", help="progress of a group command"))
    status.add_argument("batch_id")
    status.add_argument("--json", action="store_true")

    fleet = _profile(sub.add_parser("fleet", help="the fleet, a page at a time"))
    fleet.add_argument("--commune", default="")
    fleet.add_argument("--page-size", type=int, default=200)
    fleet.add_argument("--json", action="store_true")


def _profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--profile", type=Path, help="operator profile dir ($ONDIJON_PROFILE)")
    return p


def _target(p: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--city", action="store_true", help="every gateway")
    g.add_argument("--commune")
    g.add_argument("--tag")
    g.add_argument("--gateways", help="comma-separated gateway ids (with --name)")
    g.add_argument("--area", type=Path, help="GeoJSON Polygon (with --name)")
    p.add_argument("--name", default="", help="name of a list or an area")
    return p


def target_of(args: argparse.Namespace) -> control_pb2.Target | None:
    if args.city:
        return control_pb2.Target(city=True)
    if args.commune is not None:
        return control_pb2.Target(commune=args.commune)
    if args.tag is not None:
        return control_pb2.Target(tag=args.tag)
    if args.gateways is not None:
        ids = [g.strip() for g in args.gateways.split(",") if g.strip()]
        return control_pb2.Target(list=control_pb2.GatewayList(name=args.name, gateway_ids=ids))
    if args.area is not None:
        return control_pb2.Target(
            area=control_pb2.Area(name=args.name, polygon=read_polygon(args.area))
        )
    return None


def read_polygon(path: Path) -> list[control_pb2.GeoPoint]:
    """The outer ring of a GeoJSON Polygon (a geometry, a Feature or a one-feature
    collection)."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdminError("--area", f"{path}: {exc}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = (data.get("features") or [None])[0]
    if isinstance(data, dict) and data.get("type") == "Feature":
        data = data.get("geometry")
    if not isinstance(data, dict) or data.get("type") != "Polygon":
        raise AdminError("--area", "must be a GeoJSON Polygon")
    try:
        return [
            control_pb2.GeoPoint(latitude=float(lat), longitude=float(lon))
            for lon, lat, *_ in data["coordinates"][0]
        ]
    except (KeyError, IndexError, TypeError, ValueError):
        raise AdminError("--area", "coordinates: a ring of [longitude, latitude]") from None


async def import_requests(
    assets: list[control_pb2.Asset], *, dry_run: bool, digest: str
) -> AsyncIterator[control_pb2.ImportAssetsRequest]:
    """The ImportAssets stream: the header, then ``assets`` in chunks of :data:`CHUNK`."""
    yield control_pb2.ImportAssetsRequest(dry_run=dry_run, expected_digest=digest)
    for i in range(0, len(assets), CHUNK):
        yield control_pb2.ImportAssetsRequest(assets=assets[i : i + CHUNK])


def _json(message: Message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, ensure_ascii=True)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    cells = [list(header)] + [[escape(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(message: Any, field: str) -> str:
    if not message.HasField(field):
        return "-"
    return f"{getattr(message, field).ToDatetime():%Y-%m-%d %H:%M} UTC"


def run_city(args: argparse.Namespace) -> int:
    if args.command == "city":
        city = generate(args.seed, cabinets=args.cabinets, lamps=args.lamps)
        text = (
            to_geojson(city.assets)
            if args.out.suffix in (".geojson", ".json")
            else to_csv(city.assets)
        )
        args.out.write_text(text)
        print(
            f"{len(city.assets)} assets of {len(city.communes)} communes written to "
            f"{escape(str(args.out))}"
        )
        return 0
    return asyncio.run(_run(Profile.load(args.profile), args))


async def _run(profile: Profile, args: argparse.Namespace) -> int:
    async with AdminClient(profile, timeout=CITY_TIMEOUT_S) as client:
        if args.command == "assets":
            return await _assets(client, args)
        if args.command == "fleet":
            return await _fleet(client, args)
        return await _group(client, args)


async def _assets(client: AdminClient, args: argparse.Namespace) -> int:
    if args.assets_command == "list":
        request = control_pb2.ListAssetsRequest(
            kind=_KIND_NUMBERS.get(args.kind, control_pb2.ASSET_KIND_UNSPECIFIED),
            commune=args.commune,
            gateway_id=args.gateway,
            page_size=args.limit,
        )
        response = await client.list_assets(request)
        if args.json:
            print(_json(response))
            return 0
        _table(
            ("KIND", "ID", "CABINET", "DEVICE", "COMMUNE", "LAT", "LON", "POWER_W"),
            (
                (
                    _KIND_NAMES[a.kind],
                    a.asset_id,
                    a.gateway_id,
                    a.device_id or "-",
                    a.commune,
                    f"{a.latitude:.5f}",
                    f"{a.longitude:.5f}",
                    f"{a.power_w:g}" if a.power_w else "-",
                )
                for a in response.assets
            ),
        )
        return 0
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminError(str(args.file), str(exc)) from None
    assets, where = read_inventory(args.file.name, text)
    # Checked here first, so a mistake is named by its line; the server checks again.
    try:
        check_inventory(assets, where, known_cabinets=None, today=datetime.now(UTC).date())
    except InventoryError as exc:
        if "no cabinet" not in exc.reason:  # cabinets may already be in the register
            raise
    from orchestrator.assets.wire import asset_to_proto  # the same conversion both sides

    messages = [asset_to_proto(a) for a in assets]
    preview = await client.import_assets(import_requests(messages, dry_run=True, digest=""))
    _print_diff(preview)
    if preview.added == preview.changed == preview.removed == 0:
        print("nothing to change: the register already matches this inventory")
        return 0
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise AdminError("--yes", "not a terminal: pass --yes to apply, or --dry-run")
        answer = await asyncio.to_thread(input, "apply? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not applied")
            return 1
    done = await client.import_assets(
        import_requests(messages, dry_run=False, digest=preview.register_digest)
    )
    print(f"applied: {done.added} added, {done.changed} changed, {done.removed} removed")
    return 0


def _print_diff(response: control_pb2.ImportAssetsResponse) -> None:
    print(f"{response.added} to add, {response.changed} to change, {response.removed} to remove")
    for sign, items, total in (
        ("+", response.added_sample, response.added),
        ("~", response.changed_sample, response.changed),
        ("-", response.removed_sample, response.removed),
    ):
        for item in items:
            fields = f" ({', '.join(item.fields)})" if item.fields else ""
            print(
                f"  {sign} {_KIND_NAMES.get(item.kind, '?')} "
                f"{escape(item.asset_id)}{escape(fields)}"
            )
        if total > len(items):
            print(f"  {sign} ... and {total - len(items)} more")


async def _fleet(client: AdminClient, args: argparse.Namespace) -> int:
    token, rows, items = "", [], []
    while True:
        response = await client.list_fleet(
            control_pb2.ListFleetRequest(
                commune=args.commune, page_token=token, page_size=args.page_size
            )
        )
        items += list(response.gateways)
        token = response.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps([json.loads(_json(g)) for g in items], ensure_ascii=True, indent=1))
        return 0
    for g in items:
        rows.append(
            (
                g.gateway_id,
                g.commune,
                "online" if g.connected else "offline",
                _when(g, "last_seen"),
                g.firmware_version or "-",
                f"{g.documents_held}/{g.documents}",
                ",".join(g.tags) or "-",
            )
        )
    _table(("GATEWAY", "COMMUNE", "LINK", "LAST SEEN", "FIRMWARE", "DOCS HELD", "TAGS"), rows)
    return 0


async def _group(client: AdminClient, args: argparse.Namespace) -> int:
    what = args.group_command
    if what == "put":
        kind = documents.kind_named(args.kind)
        try:
            text = args.file.read_text()
        except OSError as exc:
            raise AdminError(str(args.file), str(exc)) from None
        payload = documents.payload_from_json(kind, text, source=str(args.file))
        put = await client.put_group_document(
            control_pb2.PutGroupDocumentRequest(
                target=target_of(args), kind=kind.number, payload=payload
            )
        )
        print(
            f"{args.kind} assigned to {escape(_describe(put.document))}: "
            f"{put.gateways_covered} gateway(s) covered, {put.gateways_changed} given "
            f"a new version, {put.document.gateways} take it (others have a more specific one)"
        )
        return 0
    if what == "remove":
        kind = documents.kind_named(args.kind)
        removed = await client.remove_group_document(
            control_pb2.RemoveGroupDocumentRequest(target=target_of(args), kind=kind.number)
        )
        print(
            f"removed; {removed.gateways_changed} gateway(s) moved to the next document "
            "covering them"
        )
        return 0
    if what == "list":
        kind_number: Any = documents.kind_named(args.kind).number if args.kind else 0
        listed = await client.list_group_documents(
            control_pb2.ListGroupDocumentsRequest(kind=kind_number)
        )
        if args.json:
            print(_json(listed))
            return 0
        _table(
            ("ID", "KIND", "TARGET", "GATEWAYS", "ISSUED", "BY"),
            (
                (
                    d.assignment_id,
                    link_pb2.DocumentKind.Name(d.kind).removeprefix("DOCUMENT_KIND_").lower(),
                    _describe(d),
                    d.gateways,
                    _when(d, "issued_at"),
                    d.issued_by,
                )
                for d in listed.documents
            ),
        )
        return 0
    if what in ("effective", "release"):
        kind = documents.kind_named(args.kind)
        if what == "release":
            released = await client.release_gateway_document(
                control_pb2.ReleaseGatewayDocumentRequest(
                    gateway_id=args.gateway_id, kind=kind.number
                )
            )
            print(
                f"{args.kind} of {escape(args.gateway_id)} follows its groups again: "
                f"version {released.document.version}"
            )
            return 0
        effective = await client.get_effective_document(
            control_pb2.GetEffectiveDocumentRequest(gateway_id=args.gateway_id, kind=kind.number)
        )
        if args.json:
            print(_json(effective))
            return 0
        if not effective.HasField("document"):
            print(f"{escape(args.gateway_id)} has no {args.kind}")
            return 0
        held = (
            "holds it"
            if effective.held.version == effective.document.version
            and effective.held.digest == effective.document.digest
            else f"holds version {effective.held.version or 'none'}"
        )
        origin = (
            _describe(effective.from_group)
            if effective.source != "gateway"
            else "put on the gateway itself"
        )
        print(
            f"{args.kind} version {effective.document.version} from {escape(origin)}; "
            f"the gateway {held}"
        )
        for s in effective.shadowed:
            print(f"  shadows {escape(_describe(s))} (assignment {s.assignment_id})")
        return 0
    if what == "convergence":
        kind = documents.kind_named(args.kind)
        request = control_pb2.GetConvergenceRequest(kind=kind.number, max_lagging=args.max_lagging)
        target = target_of(args)
        if target is not None:
            request.target.CopyFrom(target)
        conv = await client.get_convergence(request)
        if args.json:
            print(_json(conv))
            return 0
        print(
            f"{conv.converged} of {conv.gateways - conv.without_document} "
            "gateway(s) hold "
            f"their {args.kind}; lagging: {conv.offline} offline, {conv.refused} refused, "
            f"{conv.pending} pending; {conv.without_document} without one"
        )
        if conv.lagging:
            _table(
                ("GATEWAY", "COMMUNE", "WANTS", "HOLDS", "WHY", "SINCE / ERROR"),
                (
                    (
                        g.gateway_id,
                        g.commune,
                        g.desired_version,
                        g.held_version or "-",
                        g.reason,
                        g.refusal or _when(g, "offline_since"),
                    )
                    for g in conv.lagging
                ),
            )
        return 0
    if what == "override":
        target = target_of(args)
        if not 0 <= args.level <= 100:
            raise AdminError("--level", "a percentage, 0 to 100")
        if not 0 < args.hours <= 168:
            raise AdminError("--hours", "more than 0, at most 168 (7 days)")
        # Timed on the street's clock (the profile's), like a one-gateway override.
        command = lamp_override(
            args.level, args.hours * 60, args.priority, [], clock=client.profile.clock
        )
        sent = await client.send_group_command(
            control_pb2.SendGroupCommandRequest(target=target, command=command)
        )
        print(
            f"lamps of {sent.gateways} gateway(s) to {args.level} % for {args.hours:g} h; "
            f"batch {sent.batch_id} (ondijon group command {sent.batch_id})"
        )
        return 0
    batch = await client.get_group_command(
        control_pb2.GetGroupCommandRequest(batch_id=args.batch_id)
    )
    if args.json:
        print(_json(batch))
        return 0
    counts = ", ".join(f"{n} {escape(s)}" for s, n in sorted(batch.by_status.items()))
    print(f"{batch.gateways} gateway(s): {counts}")
    for g in batch.failed:
        print(f"  not done: {escape(g)}")
    return 0


def _describe(d: control_pb2.GroupDocument) -> str:
    t = d.target
    which = t.WhichOneof("target")
    if which == "city":
        return "the city"
    if which == "list":
        return f"list {t.list.name} ({len(t.list.gateway_ids)} gateways)"
    if which == "area":
        return f"area {t.area.name}"
    return f"{which} {getattr(t, which or 'commune')}"

"""``ondijon release`` and ``ondijon campaign``: agent releases and firmware campaigns.

    ondijon release keygen KEY                     an Ed25519 release key (+ KEY.pub to pin)
    ondijon release build WHEEL --out DIR          a release directory (manifest, wheel)
    ondijon release sign RELEASE_DIR --key KEY     add a signature
    ondijon release upload RELEASE_DIR             store it on the orchestrator (admin)
    ondijon release list
    ondijon campaign create VERSION --commune C | --tag T | --gateway G  [options]
    ondijon campaign list | show ID | pause ID | resume ID | abort ID

Release keys stay on the release manager's machine; agents pin the ``.pub`` files.

Every text printed passes :func:`foundation.escaping.escape`: campaign ids, versions, reasons
and history come from operators, details and versions from gateways, paths and file names
from the command line; none may add a line or reach the terminal as a control sequence.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from foundation.escaping import escape
from ondijon.client import AdminClient, AdminError
from ondijon.tables import as_json, table, to_dict
from protos.ondijon.v1 import firmware_pb2
from provisioning.profile import Profile
from provisioning.release import (
    ReleaseError,
    build_release,
    generate_release_key,
    load_release,
    release_manifest_proto,
    sign_release,
)

UPLOAD_CHUNK_BYTES = 1024 * 1024
_STATUS = {
    v: k.removeprefix("CAMPAIGN_STATUS_").lower() for k, v in firmware_pb2.CampaignStatus.items()
}
_STAGE = {
    v: k.removeprefix("FIRMWARE_STAGE_").lower() for k, v in firmware_pb2.FirmwareStage.items()
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``release`` and ``campaign`` to the ``ondijon`` command line."""
    release = sub.add_parser("release", help="agent releases: keys, build, sign, upload")
    rel = release.add_subparsers(dest="release_command", required=True)
    keygen = rel.add_parser("keygen", help="create a release key (KEY, 0600) and KEY.pub")
    keygen.add_argument("key", type=Path)
    build = rel.add_parser("build", help="package a wheel as an (unsigned) release")
    build.add_argument("wheel", type=Path)
    build.add_argument("--out", type=Path, required=True, help="directory of releases")
    build.add_argument("--version", default="", help="default: the wheel's version")
    build.add_argument("--min-orchestrator", default="0.1.0")
    build.add_argument("--expires-days", type=float, default=90)
    sign = rel.add_parser("sign", help="sign a release directory's manifest")
    sign.add_argument("release_dir", type=Path)
    sign.add_argument("--key", type=Path, required=True)
    for name, text in (("upload", "store a signed release on the orchestrator (admin)"),):
        upload = rel.add_parser(name, help=text)
        upload.add_argument("release_dir", type=Path)
        _profile(upload)
    listing = rel.add_parser("list", help="releases stored on the orchestrator")
    listing.add_argument("--json", action="store_true")
    _profile(listing)

    campaign = sub.add_parser("campaign", help="firmware campaigns")
    camp = campaign.add_subparsers(dest="campaign_command", required=True)
    create = camp.add_parser("create", help="roll a release out in waves")
    create.add_argument("version")
    create.add_argument("--id", default="", help="campaign id (default: made up)")
    create.add_argument("--commune", action="append", default=[])
    create.add_argument("--tag", action="append", default=[])
    create.add_argument("--gateway", action="append", default=[])
    create.add_argument("--waves", default="1,10,50,100", help="cumulative percentages")
    create.add_argument("--success", type=float, default=0.9, help="fraction to advance")
    create.add_argument("--error", type=float, default=0.1, help="fraction that halts")
    create.add_argument("--window", default="", help="daily HH:MM-HH:MM, site local time")
    create.add_argument("--site-window", action="append", default=[], help="GATEWAY=HH:MM-HH:MM")
    create.add_argument("--allow-night", action="store_true", help="lamps may update at night")
    create.add_argument("--daylight-margin-min", type=float, default=60)
    create.add_argument("--allow-downgrade", action="store_true")
    create.add_argument("--backend", choices=["native", "balena"], default="native")
    create.add_argument("--balena-release", default="", help="commit or id (balena backend)")
    create.add_argument("--balena-device", action="append", default=[], help="GATEWAY=UUID")
    create.add_argument("--canary-tag", default="canary")
    _profile(create)
    listing = camp.add_parser("list", help="every campaign")
    listing.add_argument("--json", action="store_true")
    _profile(listing)
    for name, text in (
        ("show", "a campaign's waves and per-gateway outcomes"),
        ("pause", "stop new offers"),
        ("resume", "resume a paused or halted campaign"),
        ("abort", "stop for good"),
    ):
        p = camp.add_parser(name, help=text)
        p.add_argument("campaign_id")
        if name in ("pause", "abort"):
            p.add_argument("--reason", default="")
        _profile(p)


def _profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, help="operator profile dir ($ONDIJON_PROFILE)")


def run_firmware(args: argparse.Namespace) -> int:
    """Run a ``release`` or ``campaign`` command (errors are FieldErrors: one line, exit 2)."""
    if args.command == "release":
        return _release(args)
    return _campaign(args)


def _release(args: argparse.Namespace) -> int:
    what = args.release_command
    if what == "keygen":
        kid = generate_release_key(args.key)
        key = escape(str(args.key))
        print(f"release key {kid} written to {key} (0600); agents pin {key}.pub")
        return 0
    if what == "build":
        version = args.version or _wheel_version(args.wheel)
        expires = datetime.now(UTC) + timedelta(days=args.expires_days)
        built = build_release(args.wheel, version, args.min_orchestrator, expires, args.out)
        print(
            f"release {escape(version)} built in {escape(str(built))} "
            "(unsigned: run `ondijon release sign`)"
        )
        return 0
    if what == "sign":
        kid = sign_release(args.release_dir, args.key)
        print(f"{escape(str(args.release_dir))} signed by key {kid}")
        return 0
    client = AdminClient(Profile.load(args.profile))
    if what == "upload":
        info = asyncio.run(upload_release(client, args.release_dir))
        keys = escape(", ".join(info.key_ids))
        print(f"release {escape(info.version)} uploaded ({info.total_size} bytes, keys {keys})")
        return 0
    response = asyncio.run(client.list_releases())
    if args.json:
        print(as_json([to_dict(r) for r in response.releases]))
        return 0
    rows = [
        [
            r.version,
            f"{r.total_size} B",
            f"{r.expires_at.ToDatetime():%Y-%m-%d}",
            ",".join(r.key_ids),
        ]
        for r in response.releases
    ]
    print(table(["VERSION", "SIZE", "EXPIRES", "KEYS"], rows))
    return 0


def _wheel_version(wheel: Path) -> str:
    parts = wheel.name.split("-")
    if len(parts) < 5 or not wheel.name.endswith(".whl"):
        raise ReleaseError("wheel", f"{wheel.name} is not a wheel file name; give --version")
    return parts[1]


def _campaign(args: argparse.Namespace) -> int:
    client = AdminClient(Profile.load(args.profile), timeout=60)
    what = args.campaign_command
    if what == "create":
        print(describe(asyncio.run(client.create_campaign(create_request(args))).campaign))
        return 0
    if what == "list":
        response = asyncio.run(client.list_campaigns())
        if args.json:
            print(as_json([to_dict(c) for c in response.campaigns]))
            return 0
        print(table(CAMPAIGN_HEADERS, [summary_row(c) for c in response.campaigns]))
        return 0
    reason = getattr(args, "reason", "")
    campaign_id = args.campaign_id
    campaign: firmware_pb2.Campaign
    if what == "show":
        request = firmware_pb2.GetCampaignRequest(campaign_id=campaign_id)
        campaign = asyncio.run(client.get_campaign(request)).campaign
    elif what == "pause":
        pause = firmware_pb2.PauseCampaignRequest(campaign_id=campaign_id, reason=reason)
        campaign = asyncio.run(client.pause_campaign(pause)).campaign
    elif what == "resume":
        resume = firmware_pb2.ResumeCampaignRequest(campaign_id=campaign_id)
        campaign = asyncio.run(client.resume_campaign(resume)).campaign
    else:
        abort = firmware_pb2.AbortCampaignRequest(campaign_id=campaign_id, reason=reason)
        campaign = asyncio.run(client.abort_campaign(abort)).campaign
    print(describe(campaign))
    return 0


def create_request(args: argparse.Namespace) -> firmware_pb2.CreateCampaignRequest:
    """The CreateCampaign request of ``ondijon campaign create``'s arguments."""
    try:
        percents = [float(p) for p in args.waves.split(",") if p.strip()]
    except ValueError:
        raise AdminError("--waves", f"{args.waves!r} is not a list of percentages") from None
    request = firmware_pb2.CreateCampaignRequest(
        campaign_id=args.id,
        version=args.version,
        target=firmware_pb2.CampaignTarget(
            communes=args.commune, tags=args.tag, gateway_ids=args.gateway
        ),
        waves=[
            firmware_pb2.CampaignWave(
                percent=p, success_threshold=args.success, error_threshold=args.error
            )
            for p in percents
        ],
        window=args.window,
        site_windows=_pairs("--site-window", args.site_window),
        allow_night=args.allow_night,
        daylight_margin=Duration(seconds=int(args.daylight_margin_min * 60)),
        allow_downgrade=args.allow_downgrade,
        backend=(
            firmware_pb2.CAMPAIGN_BACKEND_BALENA
            if args.backend == "balena"
            else firmware_pb2.CAMPAIGN_BACKEND_NATIVE
        ),
        balena_release=args.balena_release,
        balena_devices=_pairs("--balena-device", args.balena_device),
        canary_tag=args.canary_tag,
    )
    return request


def _pairs(option: str, values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise AdminError(option, f"{value!r} is not GATEWAY=VALUE")
        pairs[key] = rest
    return pairs


async def upload_release(
    client: AdminClient, release_dir: Path, *, chunk_bytes: int = UPLOAD_CHUNK_BYTES
) -> firmware_pb2.ReleaseInfo:
    """Upload a signed release directory (the manifest first, then each part in chunks).

    Raises:
        ReleaseError: the directory is not a readable release.
        AdminError: the orchestrator refused it.
    """
    release = load_release(release_dir)
    if not release.signatures:
        raise ReleaseError("signatures", f"{release_dir} is not signed (ondijon release sign)")
    parts = {name: path.read_bytes() for name, path in release.parts.items()}

    async def requests() -> AsyncIterator[firmware_pb2.UploadReleaseRequest]:
        yield firmware_pb2.UploadReleaseRequest(manifest=release_manifest_proto(release))
        for name, data in parts.items():
            for offset in range(0, len(data), chunk_bytes):
                yield firmware_pb2.UploadReleaseRequest(
                    chunk=firmware_pb2.ReleaseChunk(
                        part=name, offset=offset, data=data[offset : offset + chunk_bytes]
                    )
                )

    return (await client.upload_release(requests())).release


CAMPAIGN_HEADERS = ["CAMPAIGN", "STATUS", "VERSION", "WAVE", "UPDATED", "FAILED"]


def summary_row(campaign: firmware_pb2.Campaign) -> list[str]:
    """A campaign's row in ``ondijon campaign list``."""
    return [
        campaign.campaign_id,
        _STATUS[campaign.status],
        campaign.version,
        f"{campaign.current_wave}/{len(campaign.waves)}",
        f"{sum(w.committed for w in campaign.waves)}/{campaign.target_count}",
        str(sum(w.failed for w in campaign.waves)),
    ]


def summary(campaign: firmware_pb2.Campaign) -> str:
    """One line per campaign."""
    committed = sum(w.committed for w in campaign.waves)
    failed = sum(w.failed for w in campaign.waves)
    return (
        f"{escape(campaign.campaign_id):24} {_STATUS[campaign.status]:9} "
        f"{escape(campaign.version):12} "
        f"wave {campaign.current_wave}/{len(campaign.waves)}  "
        f"{committed}/{campaign.target_count} updated, {failed} failed"
    )


def describe(campaign: firmware_pb2.Campaign) -> str:
    """A campaign in full: waves, per-gateway outcomes, why it waits, history."""
    lines = [summary(campaign)]
    window = escape(campaign.window) or "any time"
    night = "lamps update at night too" if campaign.allow_night else "lamps only in daylight"
    lines.append(f"  window {window}; {night}")
    for index, wave in enumerate(campaign.waves, 1):
        lines.append(
            f"  wave {index}: {wave.percent:g} %  {wave.gateways} gateway(s), "
            f"{wave.offered} offered, {wave.committed} updated, {wave.failed} failed "
            f"(advance at {wave.success_threshold:.0%}, halt above {wave.error_threshold:.0%})"
        )
    for g in campaign.gateways:
        stage = (
            _STAGE.get(g.stage, "?")
            if g.stage
            else ("offered" if g.HasField("offered_at") else "waiting")
        )
        done = f" {g.bytes_done} B" if g.stage == firmware_pb2.FIRMWARE_STAGE_DOWNLOADING else ""
        runs = f"  runs {escape(g.hello_version)}" if g.hello_version else ""
        aborted = campaign.status == firmware_pb2.CAMPAIGN_STATUS_ABORTED
        past = "  past the point of no return" if aborted and g.past_point_of_no_return else ""
        detail = f"  {escape(g.detail)}" if g.detail else ""
        gateway = escape(g.gateway_id)
        lines.append(f"    {gateway:24} wave {g.wave}  {stage}{done}{runs}{past}{detail}")
    lines += [f"  now: {escape(r)}" for r in campaign.reasons]
    lines += [f"  {escape(h)}" for h in campaign.history]
    return "\n".join(lines)

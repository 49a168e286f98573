"""``ondijon alarms|energy|playbook``: the control room's operations over the city.

    ondijon alarms list [--commune C] [--type T] [--severity N] [--state S] [--json]
    ondijon alarms watch [--commune C]
    ondijon alarms ack ID [--comment TEXT]
    ondijon alarms shelve ID --hours H
    ondijon alarms assign ID --crew CREW
    ondijon alarms close ID --note TEXT
    ondijon energy --since YYYY-MM-DD [--until D] [--by commune|gateway|lamp|day] [--json]
    ondijon playbook put FILE.json | list | start NAME [--confirm-by-second] | confirm RUN
    ondijon playbook end RUN | show RUN | runs [--ended N] [--json]

Listings are tables with headers (``--json`` for the messages); text that came from a
gateway or a caller is escaped before it reaches the terminal. Refusals are one line
naming the field (exit 2), and nothing changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message

from foundation.escaping import escape
from ondijon.client import AdminClient, AdminError
from protos.ondijon.v1 import control_pb2
from provisioning.profile import Profile

SEVERITY = {1: "warning", 2: "minor", 3: "major", 4: "critical"}
# A run as each playbook RPC answers it (the same fields under four message names).
PlaybookRun = (
    control_pb2.StartPlaybookResponse
    | control_pb2.ConfirmPlaybookResponse
    | control_pb2.EndPlaybookResponse
    | control_pb2.GetPlaybookRunResponse
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alarms = sub.add_parser("alarms", help="alarms as states: list, watch, ack, shelve, assign")
    a_sub = alarms.add_subparsers(dest="alarms_command", required=True)
    ls = a_sub.add_parser("list", help="open alarms, root causes first (flood control)")
    ls.add_argument("--commune", default="")
    ls.add_argument("--type", default="")
    ls.add_argument("--gateway", default="")
    ls.add_argument("--severity", type=int, default=0, help="at least 1..4 (warning..critical)")
    ls.add_argument(
        "--state",
        default="open",
        choices=["open", "closed", "all", "unacknowledged", "acknowledged", "cleared", "shelved"],
    )
    ls.add_argument("--root", type=int, default=0, help="the alarms grouped under this one")
    ls.add_argument("--all", action="store_true", help="grouped alarms too")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    watch = a_sub.add_parser("watch", help="every change of an alarm, as it happens")
    watch.add_argument("--commune", default="")
    ack = a_sub.add_parser("ack", help="acknowledge, with a comment")
    ack.add_argument("alarm_id", type=int)
    ack.add_argument("--comment", default="")
    shelve = a_sub.add_parser("shelve", help="out of the list and reminders for a while")
    shelve.add_argument("alarm_id", type=int)
    shelve.add_argument("--hours", type=float, required=True)
    assign = a_sub.add_parser("assign", help="send a crew")
    assign.add_argument("alarm_id", type=int)
    assign.add_argument("--crew", required=True)
    close = a_sub.add_parser("close", help="close with the repair note")
    close.add_argument("alarm_id", type=int)
    close.add_argument("--note", required=True)
    for p in (ls, watch, ack, shelve, assign, close):
        _profile(p)

    energy = sub.add_parser("energy", help="kWh, burning hours and saving against the baseline")
    energy.add_argument("--since", required=True, help="local day YYYY-MM-DD")
    energy.add_argument("--until", default="", help="local day, inclusive (default: since)")
    energy.add_argument("--by", default="commune", choices=["commune", "gateway", "lamp", "day"])
    energy.add_argument("--commune", default="")
    energy.add_argument("--gateway", default="")
    energy.add_argument("--limit", type=int, default=1000)
    energy.add_argument("--offset", type=int, default=0)
    energy.add_argument("--json", action="store_true")
    _profile(energy)

    book = sub.add_parser("playbook", help="crisis playbooks (admin or crisis role)")
    b_sub = book.add_subparsers(dest="playbook_command", required=True)
    put = b_sub.add_parser("put", help="store a new version of a playbook (JSON file)")
    put.add_argument("file", type=Path)
    listing = b_sub.add_parser("list", help="the latest version of each playbook")
    listing.add_argument("--json", action="store_true")
    start = b_sub.add_parser("start", help="validate and start a playbook")
    start.add_argument("name")
    start.add_argument("--version", type=int, default=0)
    start.add_argument(
        "--confirm-by-second", action="store_true", help="wait for a second person's confirm"
    )
    runs = b_sub.add_parser("runs", help="the open runs, then the latest ended ones")
    runs.add_argument("--ended", type=int, default=20, help="ended runs listed (default 20)")
    runs.add_argument("--json", action="store_true")
    for name, text in (
        ("confirm", "confirm a run (a second person)"),
        ("end", "end a run: every action cancelled, schedules resume"),
        ("show", "a run and its progress per gateway"),
    ):
        p = b_sub.add_parser(name, help=text)
        p.add_argument("run_id")
    for p in (put, listing, runs, start, *[b_sub.choices[n] for n in ("confirm", "end", "show")]):
        _profile(p)
    for p in (start, b_sub.choices["confirm"], b_sub.choices["end"], b_sub.choices["show"]):
        p.add_argument("--json", action="store_true")


def _profile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, help="operator profile dir ($ONDIJON_PROFILE)")


def _when(ts: object) -> str:
    if not getattr(ts, "seconds", 0):
        return "-"
    return f"{ts.ToDatetime():%Y-%m-%d %H:%M:%S}"  # type: ignore[attr-defined]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned under their headers; every cell escaped."""
    cells = [[escape(str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _json(message: Message) -> str:
    return json_format.MessageToJson(
        message, indent=2, preserving_proto_field_name=True, ensure_ascii=True
    )


def alarm_rows(alarms: Sequence[control_pb2.AlarmRecord]) -> str:
    return table(
        [
            "ID",
            "SEVERITY",
            "STATE",
            "COMMUNE",
            "GATEWAY",
            "DEVICE",
            "TYPE",
            "COUNT",
            "GROUPS",
            "LAST",
            "CREW",
        ],
        [
            (
                a.alarm_id,
                SEVERITY.get(a.severity, a.severity),
                a.state,
                a.commune,
                a.gateway_id,
                a.device_id or "-",
                a.type,
                a.count,
                a.grouped or "",
                _when(a.last_at),
                a.assigned_to or "",
            )
            for a in alarms
        ],
    )


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with AdminClient(Profile.load(args.profile)) as client:
        return await _dispatch(client, args)


async def _dispatch(client: AdminClient, args: argparse.Namespace) -> int:
    if args.command == "alarms":
        return await _alarms(client, args)
    if args.command == "energy":
        response = await client.energy_report(
            control_pb2.EnergyReportRequest(
                since=args.since,
                until=args.until,
                by=args.by,
                commune=args.commune,
                gateway_id=args.gateway,
                limit=args.limit,
                offset=args.offset,
            ),
        )
        if args.json:
            print(_json(response))
            return 0
        rows = [*response.rows, response.total]
        print(
            table(
                [
                    args.by.upper(),
                    "LAMPS",
                    "KWH",
                    "BURNING_H",
                    "BASELINE_KWH",
                    "SAVING",
                    "DAY_BURNERS",
                    "DARK_AT_NIGHT",
                ],
                [
                    (
                        r.key,
                        r.lamps,
                        f"{r.kwh:.1f}",
                        f"{r.burning_hours:.1f}",
                        f"{r.baseline_kwh:.1f}",
                        f"{100 * r.saving:.1f} %",
                        r.day_burners,
                        r.dark_at_night,
                    )
                    for r in rows
                ],
            )
        )
        return 0
    return await _playbook(client, args)


async def _alarms(client: AdminClient, args: argparse.Namespace) -> int:
    what = args.alarms_command
    if what == "list":
        response = await client.list_alarms(
            control_pb2.ListAlarmsRequest(
                commune=args.commune,
                type=args.type,
                gateway_id=args.gateway,
                min_severity=max(0, args.severity),
                state=args.state,
                root_id=max(0, args.root),
                include_grouped=args.all,
                limit=max(1, args.limit),
            ),
        )
        print(_json(response) if args.json else alarm_rows(response.alarms))
        return 0
    if what == "watch":
        try:
            async for alarm in client.watch_alarms(
                control_pb2.WatchAlarmsRequest(commune=args.commune)
            ):
                print(alarm_rows([alarm]).splitlines()[1], flush=True)
        except BrokenPipeError:
            sys.stderr.close()
        return 0
    alarm_id = args.alarm_id
    changed: control_pb2.AlarmRecord
    if what == "ack":
        acknowledge = control_pb2.AcknowledgeAlarmRequest(alarm_id=alarm_id, text=args.comment)
        changed = (await client.acknowledge_alarm(acknowledge)).alarm
    elif what == "shelve":
        shelve = control_pb2.ShelveAlarmRequest(alarm_id=alarm_id)
        shelve.until.FromDatetime(datetime.now(UTC) + timedelta(hours=args.hours))
        changed = (await client.shelve_alarm(shelve)).alarm
    elif what == "assign":
        assign = control_pb2.AssignAlarmRequest(alarm_id=alarm_id, crew=args.crew)
        changed = (await client.assign_alarm(assign)).alarm
    else:
        close = control_pb2.CloseAlarmRequest(alarm_id=alarm_id, text=args.note)
        changed = (await client.close_alarm(close)).alarm
    print(alarm_rows([changed]))
    return 0


async def _playbook(client: AdminClient, args: argparse.Namespace) -> int:
    what = args.playbook_command
    if what == "put":
        try:
            body = args.file.read_text(encoding="utf-8")
            json.loads(body)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise AdminError("file", f"{args.file}: {exc}") from None
        put = await client.put_playbook(control_pb2.PutPlaybookRequest(body=body))
        print(f"playbook {escape(put.name)} version {put.version} stored")
        return 0
    if what == "list":
        listed = await client.list_playbooks(control_pb2.ListPlaybooksRequest())
        if args.json:
            print(_json(listed))
        else:
            print(
                table(
                    ["NAME", "VERSION", "TITLE"],
                    [(p.name, p.version, p.title) for p in listed.playbooks],
                )
            )
        return 0
    if what == "runs":
        return await _playbook_runs(client, args)
    run: PlaybookRun
    if what == "start":
        run = await client.start_playbook(
            control_pb2.StartPlaybookRequest(
                name=args.name, version=args.version, require_confirmation=args.confirm_by_second
            )
        )
    elif what == "confirm":
        run = await client.confirm_playbook(control_pb2.ConfirmPlaybookRequest(run_id=args.run_id))
    elif what == "end":
        run = await client.end_playbook(control_pb2.EndPlaybookRequest(run_id=args.run_id))
    else:
        run = await client.get_playbook_run(control_pb2.GetPlaybookRunRequest(run_id=args.run_id))
    if args.json:
        print(_json(run))
        return 0
    print(
        f"run {escape(run.run_id)}: {escape(run.name)} v{run.version} {run.status} "
        f"(started {_when(run.started_at)}, ends {_when(run.ends_at)})"
    )
    print(
        table(
            ["GATEWAY", "COMMUNE", "ACTION", "DEVICES", "STATUS", "DETAIL"],
            [
                (
                    s.gateway_id,
                    s.commune,
                    s.action,
                    ",".join(s.device_ids) or "all",
                    s.status,
                    s.detail,
                )
                for s in run.steps
            ],
        )
    )
    return 0


async def _playbook_runs(client: AdminClient, args: argparse.Namespace) -> int:
    if not 0 <= args.ended <= 200:
        raise AdminError("--ended", "between 0 and 200")
    # 0 asks the service for its default; "--ended 0" means none, so ask for one and drop it.
    listed = await client.list_playbook_runs(
        control_pb2.ListPlaybookRunsRequest(ended_limit=args.ended or 1)
    )
    runs = [r for r in listed.runs if args.ended or r.status != "ended"]
    if args.json:
        print(_json(control_pb2.ListPlaybookRunsResponse(runs=runs)))
        return 0
    print(
        table(
            ["RUN", "PLAYBOOK", "STATUS", "REQUESTED BY", "CONFIRMED BY", "STARTED", "DONE"],
            [
                (
                    r.run_id,
                    f"{r.name} v{r.version}",
                    r.status,
                    r.requested_by,
                    r.confirmed_by or "-",
                    _when(r.started_at),
                    f"{sum(1 for s in r.steps if s.status == 'DONE')}/{len(r.steps)}",
                )
                for r in runs
            ],
        )
    )
    return 0

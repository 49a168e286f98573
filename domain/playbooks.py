"""Crisis playbooks (snow, flood, a major event, an evacuation): the pure core.

A playbook is a named, versioned list of actions across domains over a target:

```json
{"name": "snow", "title": "Snow night", "duration_minutes": 240,
 "actions": [
   {"kind": "lamps", "level": 100, "target": {"communes": ["Chenôve"]}},
   {"kind": "crossings", "mode": "flashing",
    "target": {"area": [[47.3, 5.0], [47.3, 5.1], [47.4, 5.05]]}},
   {"kind": "crossings", "plan": "evacuation", "target": {"gateways": ["dj-012"]}},
   {"kind": "bollards", "position": "down", "target": {"city": true}}
 ]}
```

A target is the whole city, communes, gateways, or an area (a polygon of [latitude,
longitude] points, matched against each gateway's position); ``devices`` narrows it to
device ids (empty: every device of that kind on the gateway). Bollards go ``down`` (free
passage for the emergency services) or stay ``up`` (closed; an emergency lowering still
wins on the agent).

Started, each action becomes one override per gateway, with the run's expiry and
:data:`PRIORITY`, above every schedule and every ordinary operator's override; ending the
run cancels them and the schedule resumes. Before anything is sent, every override is
parsed by the agent's own override parser and a signal plan must exist in the plans
document the gateway holds: nothing a playbook sends can be refused by an agent's checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from domain.schedule.errors import ScheduleEngineError
from domain.schedule.wire import override_from_proto
from foundation.errors import FieldError
from protos.ondijon.v1 import schedule_pb2

# Above schedules (which overrides always beat) and above operators' overrides (the CLI's
# default priority is 50).
PRIORITY = 900
MAX_ACTIONS = 64
MAX_DURATION = timedelta(days=7)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KINDS = {
    "lamps": schedule_pb2.DEVICE_KIND_LAMP,
    "crossings": schedule_pb2.DEVICE_KIND_SIGNAL,
    "bollards": schedule_pb2.DEVICE_KIND_BOLLARD,
}


class PlaybookError(FieldError):
    """A playbook, or a run of it, is refused (the field named)."""


@dataclass(frozen=True)
class Target:
    city: bool = False
    communes: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    area: tuple[tuple[float, float], ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    kind: str
    target: Target
    level: int | None = None
    mode: str = ""
    plan: str = ""
    position: str = ""

    def describe(self) -> str:
        if self.kind == "lamps":
            return f"lamps {self.level}%"
        if self.kind == "crossings":
            return f"crossings plan {self.plan}" if self.plan else f"crossings {self.mode}"
        return f"bollards {self.position}"


@dataclass(frozen=True)
class Playbook:
    name: str
    title: str
    duration: timedelta
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Site:
    """What the core needs of a gateway: where it is, and the plans it holds."""

    gateway_id: str
    commune: str
    latitude: float
    longitude: float
    plan_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Step:
    """One action on one gateway: the override to send."""

    action_index: int
    gateway_id: str
    commune: str
    description: str
    override: schedule_pb2.Override


def _strings(raw: object, field: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise PlaybookError(field, "must be a list of non-empty strings")
    return tuple(raw)


def _target(raw: object, field: str) -> Target:
    if not isinstance(raw, dict) or not raw:
        raise PlaybookError(field, "must name the city, communes, gateways or an area")
    unknown = set(raw) - {"city", "communes", "gateways", "area", "devices"}
    if unknown:
        raise PlaybookError(f"{field}.{sorted(unknown)[0]}", "unknown key")
    area: list[tuple[float, float]] = []
    if "area" in raw:
        points = raw["area"]
        if not isinstance(points, list) or len(points) < 3:
            raise PlaybookError(f"{field}.area", "a polygon of at least 3 [lat, lon] points")
        for i, p in enumerate(points):
            ok = (
                isinstance(p, list)
                and len(p) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
            )
            if not ok or not (-90 <= p[0] <= 90 and -180 <= p[1] <= 180):
                raise PlaybookError(f"{field}.area[{i}]", "[latitude, longitude] in degrees")
            area.append((float(p[0]), float(p[1])))
    target = Target(
        city=raw.get("city") is True,
        communes=_strings(raw["communes"], f"{field}.communes") if "communes" in raw else (),
        gateways=_strings(raw["gateways"], f"{field}.gateways") if "gateways" in raw else (),
        area=tuple(area),
        devices=_strings(raw["devices"], f"{field}.devices") if "devices" in raw else (),
    )
    if sum((target.city, bool(target.communes), bool(target.gateways), bool(target.area))) != 1:
        raise PlaybookError(field, "exactly one of city, communes, gateways, area")
    return target


def parse(text: str) -> Playbook:
    """A playbook from its JSON, validated; :class:`PlaybookError` names the first problem."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise PlaybookError("body", f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PlaybookError("body", "must be a JSON object")
    unknown = set(raw) - {"name", "title", "duration_minutes", "actions"}
    if unknown:
        raise PlaybookError(sorted(unknown)[0], "unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PlaybookError("name", "1 to 64 of a-z, 0-9, - and _, starting with a letter or digit")
    title = raw.get("title", "")
    if not isinstance(title, str) or len(title) > 200 or not title.isprintable():
        raise PlaybookError("title", "printable text, at most 200 characters")
    minutes = raw.get("duration_minutes")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise PlaybookError("duration_minutes", "a positive whole number of minutes")
    duration = timedelta(minutes=minutes)
    if duration > MAX_DURATION:
        raise PlaybookError("duration_minutes", "at most 7 days (renew a longer crisis)")
    actions_raw = raw.get("actions")
    if not isinstance(actions_raw, list) or not 1 <= len(actions_raw) <= MAX_ACTIONS:
        raise PlaybookError("actions", f"1 to {MAX_ACTIONS} actions")
    actions = tuple(_action(a, f"actions[{i}]") for i, a in enumerate(actions_raw))
    return Playbook(name, title, duration, actions)


def _action(raw: object, field: str) -> Action:
    if not isinstance(raw, dict):
        raise PlaybookError(field, "must be an object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PlaybookError(f"{field}.kind", "one of lamps, crossings, bollards")
    allowed = {"kind", "target"} | {
        "lamps": {"level"},
        "crossings": {"mode", "plan"},
        "bollards": {"position"},
    }[kind]
    unknown = set(raw) - allowed
    if unknown:
        raise PlaybookError(f"{field}.{sorted(unknown)[0]}", f"not a setting of {kind}")
    target = _target(raw.get("target"), f"{field}.target")
    if kind == "lamps":
        level = raw.get("level")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
            raise PlaybookError(f"{field}.level", "a whole percentage from 0 to 100")
        return Action(kind, target, level=level)
    if kind == "crossings":
        mode, plan = raw.get("mode", ""), raw.get("plan", "")
        if bool(mode) == bool(plan):
            raise PlaybookError(field, "exactly one of mode (flashing) or plan")
        if mode and mode != "flashing":
            raise PlaybookError(f"{field}.mode", "only flashing (amber)")
        if plan and (not isinstance(plan, str) or len(plan) > 64):
            raise PlaybookError(f"{field}.plan", "a plan id")
        return Action(kind, target, mode=str(mode), plan=str(plan))
    position = raw.get("position")
    if position not in ("down", "up"):
        raise PlaybookError(f"{field}.position", "down (free passage) or up (closed)")
    return Action(kind, target, position=str(position))


def inside(point: tuple[float, float], polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether ``point`` lies inside ``polygon`` (even-odd rule, degrees as plane
    coordinates: fine at a city's scale)."""
    y, x = point
    found = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        yi, xi = polygon[i]
        yj, xj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            found = not found
        j = i
    return found


def targeted(target: Target, sites: Sequence[Site]) -> list[Site]:
    if target.city:
        return list(sites)
    if target.communes:
        return [s for s in sites if s.commune in target.communes]
    if target.gateways:
        return [s for s in sites if s.gateway_id in target.gateways]
    return [s for s in sites if inside((s.latitude, s.longitude), target.area)]


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def plan(playbook: Playbook, run_id: str, sites: Sequence[Site], now: datetime) -> list[Step]:
    """Every override the run sends, checked as the agents will check them.

    Raises:
        PlaybookError: an action targets nothing, or one of its overrides would be refused
            (a plan a crossing does not hold, a setting the agent's parser refuses).
    """
    known = {s.gateway_id for s in sites}
    steps: list[Step] = []
    for index, action in enumerate(playbook.actions):
        field = f"actions[{index}]"
        missing = [g for g in action.target.gateways if g not in known]
        if missing:
            raise PlaybookError(f"{field}.target.gateways", f"no gateway {missing[0]!r} in scope")
        chosen = targeted(action.target, sites)
        if not chosen:
            raise PlaybookError(f"{field}.target", "targets no gateway")
        for site in chosen:
            if action.plan and action.plan not in site.plan_ids:
                raise PlaybookError(
                    f"{field}.plan",
                    f"{site.gateway_id} holds no plan {action.plan!r} (its crossing refuses it)",
                )
            override = schedule_pb2.Override(
                id=f"pb-{run_id[:12]}-{index}",
                start=_ts(now),
                expiry=_ts(now + playbook.duration),
                priority=PRIORITY,
                kind=KINDS[action.kind],
                device_ids=list(action.target.devices),
            )
            if action.kind == "lamps":
                override.lamp_level = action.level or 0
            elif action.kind == "crossings":
                if action.plan:
                    override.signal_plan = action.plan
                    override.signal_mode = schedule_pb2.SIGNAL_MODE_NORMAL
                else:
                    override.signal_mode = schedule_pb2.SIGNAL_MODE_FLASHING_AMBER
            else:
                up = action.position == "up"
                override.bollard.position = (
                    schedule_pb2.BOLLARD_POSITION_UP if up else schedule_pb2.BOLLARD_POSITION_DOWN
                )
                override.bollard.access = (
                    schedule_pb2.ACCESS_POLICY_CLOSED if up else schedule_pb2.ACCESS_POLICY_OPEN
                )
            try:
                override_from_proto(override)  # the agent's own parser
            except ScheduleEngineError as exc:
                raise PlaybookError(f"{field}.{exc.field}", exc.reason) from None
            steps.append(Step(index, site.gateway_id, site.commune, action.describe(), override))
    return steps


def to_json(playbook_body: Mapping[str, Any]) -> str:
    return json.dumps(playbook_body, ensure_ascii=False, sort_keys=True)

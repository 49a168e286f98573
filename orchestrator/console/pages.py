"""The console's pages: server-rendered HTML, every outside text escaped, no inline script
or style (the Content-Security-Policy forbids both), and write controls only for a role
that may write (the service still checks: a hidden control is a courtesy, not a guard)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protos.ondijon.v1 import control_pb2, firmware_pb2, link_pb2, schedule_pb2, state_pb2


def e(value: object) -> str:
    return escape(str(value), quote=True)


def local_time(at: datetime | None, zone: str) -> str:
    """``at`` in the site's zone (the control room reads street time)."""
    if at is None:
        return "—"
    try:
        tz = ZoneInfo(zone or "Europe/Paris")
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("Europe/Paris")
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def layout(
    w: dict[str, str],
    title: str,
    body: str,
    *,
    lang: str,
    who: str = "",
    role: str = "",
    csrf: str = "",
    live: str = "",
) -> str:
    """The page around ``body``: header, navigation, sign-out (a POST, with its token)."""
    other = "en" if lang == "fr" else "fr"
    nav = ""
    if who:
        links = "".join(
            f' <a href="{href}">{e(w[key])}</a>'
            for href, key in (
                ("/schedules", "schedules"),
                ("/energy", "energy"),
                ("/playbooks", "playbooks"),
                ("/convergence", "convergence"),
                ("/campaigns", "campaigns"),
            )
        )
        if role == "admin":  # ListAudit answers admins only
            links += f' <a href="/audit">{e(w["audit"])}</a>'
        nav = (
            f'<nav aria-label="{e(w["menu"])}"><a href="/">{e(w["fleet"])}</a>'
            f' <a href="/alarms" id="alarm-link">{e(w["alarms"])}'
            f' <span id="alarm-count" class="badge" aria-live="polite"></span></a>{links}'
            f' <span class="who">{e(who)} ({e(role)})</span>'
            f'<form method="post" action="/sign-out" class="inline">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            f'<button type="submit">{e(w["sign_out"])}</button></form>'
            f' <a href="?lang={other}" hreflang="{other}">{e(w["language"])}</a></nav>'
        )
    else:
        nav = (
            f'<nav aria-label="{e(w["menu"])}">'
            f'<a href="?lang={other}" hreflang="{other}">{e(w["language"])}</a></nav>'
        )
    meta = f'<meta name="csrf-token" content="{e(csrf)}">' if csrf else ""
    live_attr = f' data-live="{e(live)}"' if live else ""
    return (
        f'<!DOCTYPE html><html lang="{e(lang)}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
        f"<title>{e(title)} — OnDijon</title>"
        '<link rel="stylesheet" href="/static/vendor/leaflet/leaflet.css">'
        '<link rel="stylesheet" href="/static/vendor/leaflet.markercluster/MarkerCluster.css">'
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/vendor/leaflet/leaflet.js" defer></script>'
        '<script src="/static/vendor/leaflet.markercluster/leaflet.markercluster.js" defer>'
        "</script>"
        '<script src="/static/console.js" defer></script>'
        f'</head><body{live_attr}><header><h1><a href="/">OnDijon</a></h1>{nav}</header>'
        f'<main id="main">{body}</main></body></html>'
    )


def sign_in_page(w: dict[str, str], *, error: str, form_token: str, certificate: bool) -> str:
    alert = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    cert = (
        f'<p><a class="button" href="/sign-in/certificate">{e(w["with_certificate"])}</a></p>'
        if certificate
        else ""
    )
    return (
        f"<h2>{e(w['sign_in'])}</h2>{alert}"
        '<form method="post" action="/sign-in" class="sign-in">'
        f'<input type="hidden" name="form_token" value="{e(form_token)}">'
        f'<label for="name">{e(w["name"])}</label>'
        '<input id="name" name="name" autocomplete="username" required>'
        f'<label for="password">{e(w["password"])}</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        f'<label for="code">{e(w["code"])}</label>'
        '<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" '
        'pattern="[0-9]{6}" maxlength="6" required>'
        f'<button type="submit">{e(w["sign_in"])}</button></form>{cert}'
    )


def _online(w: dict[str, str], connected: bool) -> str:
    word, css = (w["online"], "online") if connected else (w["offline"], "offline")
    return f'<span class="state {css}">{e(word)}</span>'


def fleet_page(
    w: dict[str, str],
    gateways: Sequence[control_pb2.FleetGateway],
    *,
    tiles_url: str,
    focus: str = "",
) -> str:
    rows = []
    for g in gateways:
        seen = g.last_seen.ToDatetime(tzinfo=UTC) if g.HasField("last_seen") else None
        if not g.documents:
            documents = e(w["none"])
        elif g.documents_held >= g.documents:
            documents = f'<span class="ok">{e(w["converged"])}</span>'
        else:
            documents = (
                f'<span class="warn">{g.documents - g.documents_held} {e(w["pending"])}</span>'
            )
        rows.append(
            f'<tr data-gateway="{e(g.gateway_id)}">'
            f'<td><a href="/gateways/{e(g.gateway_id)}">{e(g.gateway_id)}</a></td>'
            f'<td>{e(g.commune)}</td><td class="online-cell">{_online(w, g.connected)}</td>'
            f"<td>{e(local_time(seen, 'Europe/Paris'))}</td>"
            f"<td>{e(g.firmware_version or '—')}</td><td>{documents}</td></tr>"
        )
    positioned = bool(gateways)
    legend = "".join(
        f'<li><span class="dot dot-{code}"></span> {e(w[key])}</li>'
        for code, key in (
            ("a", "in_alarm"),
            ("f", "failed"),
            ("o", "offline"),
            ("0", "off"),
            ("d", "dimmed"),
            ("l", "lit"),
            ("n", "online"),
            ("none", "unknown"),
        )
    )
    map_html = (
        f'<ul class="legend-map" aria-label="{e(w["map_legend"])}">{legend}</ul>'
        f'<div id="map" class="map" data-tiles="{e(tiles_url)}" data-focus="{e(focus)}" '
        f'aria-label="{e(w["map"])}" role="region"></div>'
        if positioned
        else f"<p>{e(w['no_positions'])}</p>"
    )
    head = "".join(
        f'<th scope="col">{e(w[k])}</th>'
        for k in ("gateway", "commune", "state", "last_seen", "firmware", "documents")
    )
    return (
        f"<h2>{e(w['fleet'])} <small>({len(gateways)})</small></h2>{map_html}"
        f'<table id="fleet"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        f"</table><h3>{e(w['live'])}</h3>"
        '<ol id="live-events" class="events" aria-live="polite"></ol>'
    )


def device_summary(d: state_pb2.DeviceState) -> str:
    detail = d.WhichOneof("detail")
    if detail == "lamp":
        lamp = d.lamp
        text = f"{lamp.level} %" + (" lit" if lamp.lit else " off")
        faults = list(lamp.faults)
    elif detail == "bollard":
        b = d.bollard
        text = (
            state_pb2.BollardMotion.Name(b.motion).removeprefix("BOLLARD_MOTION_").lower()
            + " / "
            + state_pb2.BollardMode.Name(b.mode).removeprefix("BOLLARD_MODE_").lower()
            + (" / emergency" if b.emergency else "")
        )
        faults = list(b.faults)
    elif detail == "signal":
        s = d.signal
        mode = schedule_pb2.SignalMode.Name(s.mode).removeprefix("SIGNAL_MODE_").lower()
        text = f"{mode} / plan {s.plan or '—'}"
        faults = list(s.faults)
    elif detail == "cabinet":
        c = d.cabinet
        text = f"{c.temperature_c:.1f} °C" + (" / door open" if c.door_open else "")
        faults = []
    else:
        text, faults = "—", []
    if faults:
        text += " / faults: " + ", ".join(faults)
    return text


def device_code(d: state_pb2.DeviceState) -> str:
    """The map's colour of a device: ``l`` lit, ``d`` dimmed, ``0`` off, ``f`` failed,
    ``n`` normal (equipment other than a lamp)."""
    detail = d.WhichOneof("detail")
    faults = list(getattr(d, detail).faults) if detail in ("lamp", "bollard", "signal") else []
    if faults:
        return "f"
    if detail == "lamp":
        if not d.lamp.lit or d.lamp.level == 0:
            return "0"
        return "l" if d.lamp.level >= 100 else "d"
    return "n"


def device_rows(devices: Iterable[state_pb2.DeviceState], zone: str) -> str:
    rows = []
    for d in devices:
        kind = schedule_pb2.DeviceKind.Name(d.kind).removeprefix("DEVICE_KIND_").lower()
        at = d.observed_at.ToDatetime().replace(tzinfo=UTC) if d.HasField("observed_at") else None
        rows.append(
            f'<tr data-device="{e(d.device_id)}"><td>{e(d.device_id)}</td><td>{e(kind)}</td>'
            f'<td class="device-state">{e(device_summary(d))}</td>'
            f"<td>{e(local_time(at, zone))}</td></tr>"
        )
    return "".join(rows)


def event_item(stored: control_pb2.StoredEvent, zone: str) -> str:
    ev = stored.event
    at = ev.at.ToDatetime().replace(tzinfo=UTC)
    words = " ".join(part for part in (ev.type, ev.device_id, ev.message) if part)
    return f"<li><time>{e(local_time(at, zone))}</time> #{ev.sequence} {e(words)}</li>"


def _documents(w: dict[str, str], g: control_pb2.Gateway) -> str:
    held = {h.kind: h.version for h in g.held}
    rows = "".join(
        f"<tr><td>{e(link_pb2.DocumentKind.Name(d.kind).removeprefix('DOCUMENT_KIND_').lower())}"
        f"</td><td>{d.version}</td><td>{held.get(d.kind, '—')}</td></tr>"
        for d in g.desired
    )
    return (
        f'<table id="documents"><thead><tr><th scope="col">{e(w["documents"])}</th>'
        f'<th scope="col">{e(w["desired"])}</th><th scope="col">{e(w["held"])}</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf)}">'


_hidden = csrf_field


def command_forms(
    w: dict[str, str], gateway_id: str, devices: Sequence[state_pb2.DeviceState], csrf: str
) -> str:
    base = f"/gateways/{e(gateway_id)}"
    forms = [
        f'<form method="post" action="{base}/override" class="command" id="override-form">'
        f"<h4>{e(w['override'])}</h4>{_hidden(csrf)}"
        f'<label for="level">{e(w["level"])}</label>'
        '<input id="level" name="level" type="number" min="0" max="100" value="100" required>'
        f'<label for="minutes">{e(w["minutes"])}</label>'
        '<input id="minutes" name="minutes" type="number" min="1" max="10080" value="30" '
        "required>"
        f'<label for="lamps">{e(w["all_lamps"])}</label><input id="lamps" name="devices">'
        f'<button type="submit">{e(w["send"])}</button></form>',
        f'<form method="post" action="{base}/cancel-override" class="command">'
        f"<h4>{e(w['cancel_override'])}</h4>{_hidden(csrf)}"
        f'<label for="override_id">{e(w["override_id"])}</label>'
        '<input id="override_id" name="override_id" required>'
        f'<button type="submit">{e(w["send"])}</button></form>',
    ]
    bollards = [d.device_id for d in devices if d.WhichOneof("detail") == "bollard"]
    if bollards:
        options = "".join(f"<option>{e(b)}</option>" for b in bollards)
        actions = "".join(
            f'<option value="{e(name)}">{e(name.removeprefix("BOLLARD_ACTION_").lower())}</option>'
            for name in link_pb2.BollardAction.keys()  # noqa: SIM118
            if name != "BOLLARD_ACTION_UNSPECIFIED"
        )
        forms.append(
            f'<form method="post" action="{base}/bollard" class="command">'
            f"<h4>{e(w['bollard'])}</h4>{_hidden(csrf)}"
            f'<label for="bollard">{e(w["device"])}</label>'
            f'<select id="bollard" name="device">{options}</select>'
            f'<label for="bollard-action">{e(w["action"])}</label>'
            f'<select id="bollard-action" name="action">{actions}</select>'
            f'<button type="submit">{e(w["send"])}</button></form>'
        )
    signals = [d for d in devices if d.WhichOneof("detail") == "signal"]
    for s in signals:
        forms.append(
            f'<form method="post" action="{base}/crossing" class="command">'
            f"<h4>{e(w['crossing'])} {e(s.device_id)}</h4>{_hidden(csrf)}"
            f'<input type="hidden" name="device" value="{e(s.device_id)}">'
            f'<label for="plan-{e(s.device_id)}">{e(w["plan"])}</label>'
            f'<input id="plan-{e(s.device_id)}" name="plan" placeholder="{e(s.signal.plan)}">'
            f'<label for="crossing-minutes-{e(s.device_id)}">{e(w["minutes"])}</label>'
            f'<input id="crossing-minutes-{e(s.device_id)}" name="minutes" type="number" '
            'min="1" max="10080" value="30" required>'
            f'<button type="submit" name="mode" value="plan">{e(w["plan"])}</button> '
            f'<button type="submit" name="mode" value="flash">{e(w["flash"])}</button></form>'
        )
    return "".join(forms)


def cabinet_page(
    w: dict[str, str],
    gateway: control_pb2.Gateway,
    devices: Sequence[state_pb2.DeviceState],
    events: Sequence[control_pb2.StoredEvent],
    *,
    may_write: bool,
    csrf: str,
) -> str:
    g = gateway
    head = "".join(
        f'<th scope="col">{e(w[k])}</th>' for k in ("device", "kind", "state", "observed")
    )
    controls = (
        command_forms(w, g.gateway_id, devices, csrf)
        if may_write
        else f'<p class="read-only">{e(w["read_only"])}</p>'
    )
    timeline = "".join(event_item(ev, g.time_zone) for ev in reversed(events))
    return (
        f"<h2>{e(w['gateway'])} {e(g.gateway_id)} {_online(w, g.connected)}</h2>"
        f"<p>{e(g.commune)} · {e(g.firmware_version or '—')} · "
        f'<a href="/?focus={e(g.gateway_id)}">{e(w["map"])}</a> · '
        f"{e(w['last_seen'])} {e(local_time(_ts(g), g.time_zone))}</p>"
        f'<div class="columns"><section><h3>{e(w["devices"])}</h3>'
        f'<table id="devices"><thead><tr>{head}</tr></thead>'
        f"<tbody>{device_rows(devices, g.time_zone)}</tbody></table>{_documents(w, g)}</section>"
        f"<section><h3>{e(w['commands'])}</h3>{controls}</section></div>"
        f'<h3>{e(w["events"])}</h3><ol id="live-events" class="events" aria-live="polite">'
        f"{timeline}</ol>"
    )


def _ts(g: control_pb2.Gateway) -> datetime | None:
    return g.last_seen.ToDatetime().replace(tzinfo=UTC) if g.HasField("last_seen") else None


def confirm_page(
    w: dict[str, str], action: str, fields: dict[str, str], summary: str, csrf: str
) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items()
    )
    return (
        f'<h2>{e(w["confirm_title"])}</h2><p class="summary">{e(summary)}</p>'
        f'<form method="post" action="{e(action)}">{_hidden(csrf)}{hidden}'
        '<input type="hidden" name="confirmed" value="yes">'
        f'<button type="submit" id="confirm">{e(w["confirm"])}</button> '
        f'<a href="javascript:history.back()" class="button">{e(w["cancel"])}</a></form>'
    )


def command_page(w: dict[str, str], command: control_pb2.GetCommandResponse) -> str:
    status = link_pb2.CommandStatus.Name(command.status).removeprefix("COMMAND_STATUS_")
    return (
        f"<h2>{e(w['command'])} {e(command.command_id)}</h2>"
        f'<p>{e(w["gateway"])} <a href="/gateways/{e(command.gateway_id)}">'
        f"{e(command.gateway_id)}</a></p>"
        f'<p>{e(w["status"])}: <strong id="command-status" '
        f'data-command="{e(command.command_id)}">{e(status)}</strong></p>'
        f'<p>{e(w["detail"])}: <span id="command-detail">{e(command.detail or "—")}</span></p>'
    )


def campaigns_page(
    w: dict[str, str], campaigns: Sequence[firmware_pb2.Campaign], *, may_write: bool, csrf: str
) -> str:
    rows = []
    for c in campaigns:
        status = firmware_pb2.CampaignStatus.Name(c.status).removeprefix("CAMPAIGN_STATUS_")
        waves = ", ".join(f"{wave.committed}/{wave.gateways}" for wave in c.waves)
        actions = ""
        if may_write:
            actions = "".join(
                f'<form method="post" action="/campaigns/{e(c.campaign_id)}/{act}" '
                f'class="inline">{_hidden(csrf)}<button type="submit">{e(w[act])}</button></form>'
                for act in ("pause", "resume", "abort")
            )
        rows.append(
            f"<tr><td>{e(c.campaign_id)}</td><td>{e(c.version)}</td><td>{e(status)}</td>"
            f"<td>{c.current_wave + 1}/{len(c.waves)} {e(waves)}</td><td>{c.target_count}</td>"
            f"<td>{e('; '.join(c.reasons))}</td><td>{actions}</td></tr>"
        )
    head = "".join(
        f'<th scope="col">{e(t)}</th>'
        for t in ("id", w["version"], w["status"], w["waves"], w["targets"], w["reason"], "")
    )
    read_only = "" if may_write else f'<p class="read-only">{e(w["read_only"])}</p>'
    return (
        f'<h2>{e(w["campaigns"])}</h2>{read_only}<table id="campaigns"><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def message_page(title: str, message: str) -> str:
    return f'<h2>{e(title)}</h2><p class="error" role="alert">{e(message)}</p>'

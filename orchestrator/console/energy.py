"""The energy screen: kWh, burning hours and the saving against the baseline, per commune
and for the city, over a range of local days, against the métropole's 65 % target.

The figures are the Operations service's ``EnergyReport`` (within the operator's
communes). The charts are inline SVG drawn here from those figures: no script, no inline
style (the Content-Security-Policy allows neither).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from orchestrator.console.pages import e
from orchestrator.console.services import Host
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2

TARGET = 0.65  # Dijon métropole's aim: 65 % less than the lighting it replaced.
SITE_ZONE = ZoneInfo("Europe/Paris")
DEFAULT_DAYS = 7


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def saving_chart(w: dict[str, str], rows: Sequence[control_pb2.EnergyRow]) -> str:
    """Horizontal bars: each commune's saving, with the target as a line."""
    bar_h, label_w, width = 22, 210, 420
    height = bar_h * len(rows) + 30
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {label_w + width + 70} {height}" '
        f'width="{label_w + width + 70}" height="{height}" '
        f'aria-labelledby="saving-chart-title"><title id="saving-chart-title">'
        f"{e(w['saving_chart'])}</title>"
    ]
    for n, r in enumerate(rows):
        y = n * bar_h + 4
        length = max(0.0, min(1.0, r.saving)) * width
        css = "bar ok" if r.saving >= TARGET else "bar short"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="label">'
            f"{e(r.key)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h - 6}" class="{css}"/>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + 15}" class="value">'
            f"{e(percent(r.saving))}</text>"
        )
    x = label_w + TARGET * width
    parts.append(
        f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" class="target"/>'
        f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" class="label">'
        f"{e(w['target'])} {percent(TARGET)}</text></svg>"
    )
    return "".join(parts)


def daily_chart(w: dict[str, str], rows: Sequence[control_pb2.EnergyRow]) -> str:
    """Columns: kWh per day, beside the baseline's kWh."""
    if not rows:
        return ""
    peak = max(max(r.baseline_kwh, r.kwh) for r in rows) or 1.0
    col, height, top = 48, 160, 10
    width = col * len(rows) + 20
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height + 40}" width="{width}" '
        f'height="{height + 40}" aria-labelledby="daily-chart-title">'
        f'<title id="daily-chart-title">{e(w["daily_chart"])}</title>'
    ]
    for n, r in enumerate(rows):
        x = 10 + n * col
        base_h = r.baseline_kwh / peak * height
        used_h = r.kwh / peak * height
        parts.append(
            f'<rect x="{x}" y="{top + height - base_h:.1f}" width="18" height="{base_h:.1f}" '
            f'class="bar baseline"/>'
            f'<rect x="{x + 20}" y="{top + height - used_h:.1f}" width="18" '
            f'height="{used_h:.1f}" class="bar ok"/>'
            f'<text x="{x + 19}" y="{top + height + 16}" text-anchor="middle" class="label">'
            f"{e(r.key[5:])}</text>"
        )
    parts.append("</svg>")
    legend = (
        f'<p class="legend"><span class="swatch baseline"></span> {e(w["baseline"])} '
        f'<span class="swatch ok"></span> {e(w["kwh"])}</p>'
    )
    return "".join(parts) + legend


def energy_table(w: dict[str, str], report: control_pb2.EnergyReportResponse) -> str:
    head = "".join(
        f'<th scope="col">{e(w[k])}</th>'
        for k in ("commune", "lamps", "kwh", "burning_hours", "baseline", "saving")
    )

    def row(r: control_pb2.EnergyRow, css: str = "") -> str:
        met = "ok" if r.saving >= TARGET else "warn"
        return (
            f'<tr class="{css}"><td>{e(r.key)}</td><td>{r.lamps}</td><td>{r.kwh:,.1f}</td>'
            f"<td>{r.burning_hours:,.0f}</td><td>{r.baseline_kwh:,.1f}</td>"
            f'<td class="{met}">{e(percent(r.saving))}</td></tr>'
        )

    body = "".join(row(r) for r in report.rows)
    total = report.total
    foot = row(
        control_pb2.EnergyRow(
            key=w["city"],
            lamps=total.lamps,
            kwh=total.kwh,
            burning_hours=total.burning_hours,
            baseline_kwh=total.baseline_kwh,
            saving=total.saving,
        ),
        "total",
    )
    return (
        f'<table id="energy"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        f"<tfoot>{foot}</tfoot></table>"
    )


class EnergyScreen:
    def __init__(self, console: Host) -> None:
        self.console = console

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/energy", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        c = self.console
        await c.caller(request)
        today = c.clock.now().astimezone(SITE_ZONE).date()
        since = request.query.get("since", "") or str(today - timedelta(days=DEFAULT_DAYS - 1))
        until = request.query.get("until", "") or str(today)
        call, api = c.call(request), c.services.operations
        by_commune = await api.EnergyReport(
            control_pb2.EnergyReportRequest(
                since=since[:10], until=until[:10], by="commune", limit=100
            ),
            call,
        )
        by_day = await api.EnergyReport(
            control_pb2.EnergyReportRequest(since=since[:10], until=until[:10], by="day"), call
        )
        w = words(c.lang(request))
        total = by_commune.total
        target = (
            f'<p class="headline">{e(w["city_saving"])} '
            f'<strong id="city-saving">{e(percent(total.saving))}</strong> · '
            f"{e(w['target'])} {e(percent(TARGET))} · {total.kwh:,.0f} kWh · "
            f"{total.burning_hours:,.0f} {e(w['burning_hours'])}</p>"
        )
        form = (
            '<form method="get" action="/energy" class="filters">'
            f'<label for="since">{e(w["since"])}</label>'
            f'<input id="since" name="since" type="date" value="{e(since[:10])}">'
            f'<label for="until">{e(w["until"])}</label>'
            f'<input id="until" name="until" type="date" value="{e(until[:10])}">'
            f'<button type="submit">{e(w["show"])}</button></form>'
        )
        body = (
            f"<h2>{e(w['energy'])}</h2>{form}{target}"
            f'<div class="columns"><section><h3>{e(w["saving_chart"])}</h3>'
            f"{saving_chart(w, by_commune.rows)}</section>"
            f"<section><h3>{e(w['daily_chart'])}</h3>{daily_chart(w, by_day.rows)}</section>"
            f"</div>{energy_table(w, by_commune)}"
        )
        return c.page(request, w["energy"], body)

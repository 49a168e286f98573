"""The schedules and audit screens in a real browser (Debian's Chromium through
Playwright), against a real orchestrator and a real agent: a schedule put from the
console changes the lamps in the street; a bad one is refused with its field named and
nothing stored; a viewer gets no form and a forged put is refused and audited; the audit
screen shows all of it, escaped."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.async_api import expect

from ondijon.client import AdminClient
from protos.ondijon.v1 import control_pb2, link_pb2
from tests.console.conftest import ConsoleCity, shoot
from tests.console.test_console_browser import new_page, sign_in
from tests.edge.test_agent import lighting, put_schedule, running
from tests.waiting import eventually

pytestmark = pytest.mark.integration
GATEWAY = "dijon-darcy-01"


def all_day(level: int) -> str:
    return json.dumps(
        {
            "programs": [{"id": "jour", "points": [{"local_time": "00:00", "lamp_level": level}]}],
            "rules": [{"program_id": "jour", "priority": 1}],
        }
    )


async def held_version(console: ConsoleCity) -> int:
    got = await AdminClient(console.city.admin).get_desired_state(
        control_pb2.GetDesiredStateRequest(gateway_id=GATEWAY, kind=link_pb2.DOCUMENT_KIND_SCHEDULE)
    )
    return got.document.version


async def test_a_schedule_put_from_the_console_reaches_the_agent_and_is_audited(
    console: ConsoleCity, browser: Any, lamp_table: Callable[[int], str]
) -> None:
    config = await console.city.enrolled(GATEWAY, lamps=lamp_table(2))
    console.account("alice", "operator", ["*"])
    console.account("vera", "viewer", ["*"])
    console.account("root", "admin", ["*"])
    async with running(config, start=datetime.now(UTC)) as agent:
        await put_schedule(console.city, GATEWAY, lighting(100))
        await eventually(lambda: all(lamp.controller.level == 100 for lamp in agent.lamps))
        page, problems = await new_page(browser, console)
        await sign_in(page, console, "alice", console.code("alice"))
        await page.wait_for_selector("#fleet")
        await page.click("nav a[href='/schedules']")
        await page.fill("#gateway", GATEWAY)
        await page.click("form.filters button")
        # The schedule held, in words, and tonight's switch times from the engine.
        await expect(page.locator("#held-version")).to_have_attribute("data-version", "1")
        await expect(page.locator("section.program[data-program='all-day']")).to_contain_text(
            "00:00"
        )
        await expect(page.locator("#tonight tbody tr")).to_have_count(1)
        await expect(page.locator("#tonight .level")).to_have_text("100 %")

        # A preview first: nothing stored, tonight with the proposal shown beside.
        await page.fill("#document", all_day(30))
        await page.click("button[value=preview]")
        await expect(page.locator("#tonight-preview .level")).to_have_text("30 %")
        await shoot(page, "console-schedules", readme=True)
        assert await held_version(console) == 1
        await page.click("#put-schedule")
        await expect(page.locator("#put-result")).to_contain_text("2")
        await eventually(lambda: all(lamp.controller.level == 30 for lamp in agent.lamps))
        await expect(page.locator("#held-version")).to_have_attribute("data-version", "2")

        # A level out of range: refused with the field named, the text kept, nothing stored.
        await page.fill("#document", all_day(150))
        await page.click("#put-schedule")
        await expect(page.locator("#document-error")).to_contain_text("lamp_level")
        assert "150" in await page.locator("#document").input_value()
        assert await held_version(console) == 2
        # Not JSON at all: refused here, naming the document.
        await page.fill("#document", "{ programs: ")
        await page.click("#put-schedule")
        await expect(page.locator("#document-error")).to_contain_text("document")
        assert await held_version(console) == 2

        # To the whole city (a group put, as `ondijon group put`): this gateway's own
        # schedule comes first, and the page says so (0 changed of 1 covered).
        await page.goto(console.url + "/schedules")
        await page.select_option("#target", "city")
        await page.fill("#document", all_day(60))
        await page.click("#put-schedule")
        await expect(page.locator("#put-result")).to_contain_text("city — 0")
        await expect(page.locator("#put-result")).to_contain_text("/ 1")
        assert problems == []

        # A viewer: the schedule, no form; a forged put is refused, audited, not stored.
        viewer, _ = await new_page(browser, console)
        await sign_in(viewer, console, "vera", console.code("vera"))
        await viewer.wait_for_selector("#fleet")
        await viewer.goto(f"{console.url}/schedules/{GATEWAY}")
        await expect(viewer.locator("#held-version")).to_have_attribute("data-version", "2")
        assert await viewer.locator("main form:not(.filters), textarea").count() == 0
        await viewer.goto(f"{console.url}/schedules")
        assert await viewer.locator("main form:not(.filters), textarea").count() == 0
        csrf = await viewer.get_attribute('meta[name="csrf-token"]', "content")
        forged = await viewer.request.post(
            f"{console.url}/schedules/{GATEWAY}",
            form={"csrf": csrf or "", "document": all_day(0), "do": "put"},
            max_redirects=0,
        )
        assert forged.status == 403
        assert await held_version(console) == 2
        assert all(lamp.controller.level == 30 for lamp in agent.lamps)
        # The audit screen is the admins': an operator is refused, no entry shown.
        await page.goto(console.url + "/audit")
        await expect(page.locator("p.error")).to_be_visible()
        assert await page.locator("#audit").count() == 0
        assert await page.locator("nav a[href='/audit']").count() == 0

        admin, problems = await new_page(browser, console)
        await sign_in(admin, console, "root", console.code("root"))
        await admin.wait_for_selector("#fleet")
        await admin.click("nav a[href='/audit']")
        await admin.fill("#f-action", "desired_state.put")
        await admin.click("form.filters button")
        rows = admin.locator("#audit tbody tr")
        got = [
            [cell.strip() for cell in (await rows.nth(i).locator("td").all_inner_texts())]
            for i in range(await rows.count())
        ]
        assert [(r[1].rsplit("/", 1)[-1], r[2], r[5]) for r in got] == [
            ("admin", "desired_state.put", "ok"),
            ("alice", "desired_state.put", "ok"),
            ("alice", "desired_state.put", "refused"),
            ("vera", "desired_state.put", "refused"),
        ]
        assert "lamp_level" in got[2][6]
        # A filter echoed back stays text; a time filter in the site's zone narrows the list.
        await admin.fill("#f-actor", "<b>x</b>")
        await admin.click("form.filters button")
        assert await admin.locator("#f-actor").input_value() == "<b>x</b>"
        assert await admin.locator("main b").count() == 0
        await expect(admin.locator("#audit tbody tr")).to_have_count(0)
        await admin.goto(console.url + "/audit?action=desired_state.put&since=2099-01-01T00:00")
        await expect(admin.locator("#audit tbody tr")).to_have_count(0)
        await admin.goto(console.url + "/audit?since=tomorrow")
        await expect(admin.locator("p.error")).to_contain_text("since")
        assert problems == []

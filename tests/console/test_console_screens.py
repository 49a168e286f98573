"""The control room's screens in a real browser (Debian's Chromium through Playwright),
against a real orchestrator and a real agent: alarms live, acted on and audited; what a
viewer sees and what a forged action gets; energy, playbooks, convergence and the map;
an automated accessibility check (axe-core) on every screen."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from ondijon.client import AdminClient
from orchestrator.store.database import Store
from protos.ondijon.v1 import control_pb2
from tests.conftest import need
from tests.console.conftest import ConsoleCity, shoot
from tests.console.test_console_browser import new_page, sign_in
from tests.edge.test_agent import lighting, put_schedule, running
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PLAYBOOK = {
    "name": "storm",
    "title": "Tempête : tout allumer",
    "duration_minutes": 60,
    "actions": [{"kind": "lamps", "level": 100, "target": {"communes": ["Dijon"]}}],
}


def audit(console: ConsoleCity) -> list[dict[str, Any]]:
    store = Store.open(console.city.config.store_url)
    try:
        with store.engine.connect() as conn:
            return store.audit_entries(conn)
    finally:
        store.close()


async def fail_lamp(agent: Any, dead: bool) -> None:
    agent.lamps[0].controller._driver.dead = dead
    for _ in range(3):  # a fault must hold fault_delay_s before it is raised (or cleared)
        agent.clock.advance(30)
        agent.monitor()


async def test_an_alarm_from_a_real_agent_appears_live_is_acknowledged_and_audited(
    console: ConsoleCity, browser: Any, lamp_table: Callable[[int], str]
) -> None:
    config = await console.city.enrolled("dijon-darcy-01", lamps=lamp_table(2))
    console.account("alice", "operator", ["*"])
    console.account("vera", "viewer", ["*"])
    # The agent's clock moves by hand (a fault must last before it is raised): it starts
    # behind the orchestrator's, so that what it reports is never in the future.
    async with running(config, start=datetime.now(UTC) - timedelta(minutes=10)) as agent:
        await put_schedule(console.city, "dijon-darcy-01", lighting(100))
        await eventually(lambda: all(lamp.controller.level == 100 for lamp in agent.lamps))
        page, problems = await new_page(browser, console)
        await sign_in(page, console, "alice", console.code("alice"))
        await page.wait_for_selector("#fleet")
        await page.goto(console.url + "/alarms")
        await page.wait_for_selector("body[data-live-open='yes']")
        assert await page.locator("#alarms tbody tr").count() == 0

        # The lamp dies in the street: the alarm shows up on the open page, unreloaded.
        await fail_lamp(agent, True)
        row = page.locator("#alarms tbody tr").first
        await expect(row).to_contain_text("lamp_failure", timeout=15_000)
        await expect(row).to_contain_text("lamp-001")
        await expect(row.locator(".alarm-state")).to_have_text("non acquittée")
        await expect(page.locator("#alarm-count")).to_have_text("1", timeout=5_000)

        await row.locator("summary").click()
        await row.locator("form.acknowledge input[name=text]").fill("équipe prévenue")
        await row.locator("form.acknowledge button").click()
        await page.wait_for_selector("#alarms")
        row = page.locator("#alarms tbody tr").first
        await expect(row.locator(".alarm-state")).to_have_text("acquittée")
        await expect(row).to_contain_text("équipe prévenue")

        await row.locator("summary").click()
        await row.locator("form.assign input[name=crew]").fill("est-2")
        await row.locator("form.assign button").click()
        await page.wait_for_selector("#alarms")
        row = page.locator("#alarms tbody tr").first
        await expect(row).to_contain_text("est-2")

        # Repaired: the agent says so, the row changes live to "back to normal"; it stays
        # open (assigned) until the crew's repair note closes it.
        await page.wait_for_selector("body[data-live-open='yes']")
        await fail_lamp(agent, False)
        await expect(row.locator(".alarm-state")).to_have_text(
            "retour à la normale", timeout=15_000
        )
        await page.set_viewport_size({"width": 1280, "height": 800})
        await shoot(page, "console-alarms", readme=True)
        assert problems == []

        # A viewer: the same list, no control; a forged acknowledgement is refused.
        viewer, _ = await new_page(browser, console)
        await sign_in(viewer, console, "vera", console.code("vera"))
        await viewer.wait_for_selector("#fleet")
        await viewer.goto(console.url + "/alarms")
        await expect(viewer.locator("#alarms tbody tr")).to_have_count(1)
        assert await viewer.locator("main form:not(.filters)").count() == 0
        assert await viewer.locator("#alarms button, #alarms input").count() == 0
        alarm_id = await viewer.locator("#alarms tbody tr").first.get_attribute("data-alarm")
        csrf = await viewer.get_attribute('meta[name="csrf-token"]', "content")
        forged = await viewer.request.post(
            f"{console.url}/alarms/{alarm_id}/close",
            form={"csrf": csrf or "", "text": "nothing to see"},
            max_redirects=0,
        )
        assert forged.status == 403

        # The crew's note closes it: the row leaves the open list.
        await row.locator("summary").click()
        await row.locator("form.close input[name=text]").fill("driver LED remplacé")
        await row.locator("form.close button").click()
        await page.wait_for_selector("#alarms")
        await expect(page.locator("#alarms tbody tr")).to_have_count(0)

    entries = [
        (e["actor"].rsplit("/", 1)[-1], e["action"], e["result"])
        for e in audit(console)
        if e["action"].startswith("alarm.")
    ]
    assert entries == [
        ("alice", "alarm.acknowledge", "ok"),
        ("alice", "alarm.assign", "ok"),
        ("vera", "alarm.close", "refused"),
        ("alice", "alarm.close", "ok"),
    ]
    listed = await AdminClient(console.city.admin).list_alarms(
        control_pb2.ListAlarmsRequest(state="closed")
    )
    assert [(a.repair_note, a.assigned_to) for a in listed.alarms] == [
        ("driver LED remplacé", "est-2")
    ]


async def test_a_playbook_started_by_one_and_confirmed_by_another_then_ended(
    console: ConsoleCity, browser: Any
) -> None:
    await console.city.register("dijon-darcy-01")
    await AdminClient(console.city.admin).put_playbook(
        control_pb2.PutPlaybookRequest(body=json.dumps(PLAYBOOK))
    )
    console.account("cora", "crisis", ["*"])
    console.account("carl", "crisis", ["*"])
    console.account("otto", "operator", ["*"])
    page, problems = await new_page(browser, console)
    await sign_in(page, console, "cora", console.code("cora"))
    await page.wait_for_selector("#fleet")
    await page.goto(console.url + "/playbooks")
    await page.locator('tr[data-playbook="storm"] button').click()
    await page.click("#confirm")  # the console's own confirmation step
    await expect(page.locator("#run-status")).to_have_text("en attente de confirmation")
    # The one who started it may not confirm it: the service says so.
    await page.click("#confirm-run")
    await expect(page.locator("p.error")).to_contain_text("second person")

    other, _ = await new_page(browser, console)
    await sign_in(other, console, "carl", console.code("carl"))
    await other.wait_for_selector("#fleet")
    await other.goto(console.url + "/playbooks")
    await other.locator("#runs tbody tr a").first.click()
    await other.click("#confirm-run")
    await expect(other.locator("#run-status")).to_have_text("en cours")
    await expect(other.locator("#steps tbody tr")).to_have_count(1)
    await other.click("#end-run")
    await other.click("#confirm")
    await expect(other.locator("#run-status")).to_have_text("terminé")

    # An operator sees the playbooks and runs, and no control.
    third, _ = await new_page(browser, console)
    await sign_in(third, console, "otto", console.code("otto"))
    await third.wait_for_selector("#fleet")
    await third.goto(console.url + "/playbooks")
    await expect(third.locator("#runs tbody tr")).to_have_count(1)
    assert await third.locator("main form").count() == 0
    assert problems == []
    actions = [(e["actor"].rsplit("/", 1)[-1], e["action"], e["result"]) for e in audit(console)]
    assert [a for a in actions if a[1].startswith("playbook.") and a[1] != "playbook.put"] == [
        ("cora", "playbook.start", "ok"),
        ("cora", "playbook.confirm", "refused"),
        ("carl", "playbook.confirm", "ok"),
        ("carl", "playbook.end", "ok"),
    ]


async def test_every_screen_passes_an_automated_accessibility_check(
    console: ConsoleCity, browser: Any, lamp_table: Callable[[int], str]
) -> None:
    """axe-core (from node_modules, as package-lock.json pins it) on each screen: no
    serious or critical violation. Only this test's browser context bypasses the CSP, to
    inject axe; the pages are those every operator gets."""
    need(AXE.is_file(), "axe-core is not installed (npm ci)")
    config = await console.city.enrolled("dijon-darcy-01", lamps=lamp_table(2))
    await AdminClient(console.city.admin).put_playbook(
        control_pb2.PutPlaybookRequest(body=json.dumps(PLAYBOOK))
    )
    console.account("alice", "admin", ["*"])
    async with running(config, start=datetime.now(UTC)):
        context = await browser.new_context(
            ignore_https_errors=True, locale="fr-FR", bypass_csp=True
        )
        page = await context.new_page()
        await page.goto(console.url + "/sign-in")
        screens = ["/sign-in"]
        found: dict[str, list[str]] = {}
        await sign_in(page, console, "alice", console.code("alice"))
        await page.wait_for_selector("#fleet")
        screens += [
            "/",
            "/alarms",
            "/energy",
            "/playbooks",
            "/convergence",
            "/campaigns",
            "/gateways/dijon-darcy-01",
            "/schedules",
            "/schedules/dijon-darcy-01",
            "/audit",
        ]
        for path in screens:
            if path == "/sign-in":
                probe = await browser.new_context(ignore_https_errors=True, bypass_csp=True)
                target = await probe.new_page()
            else:
                target = page
            await target.goto(console.url + path)
            await target.wait_for_load_state("networkidle")
            slug = path.strip("/").replace("/", "-") or "fleet"
            await shoot(target, f"screen-{slug}")
            await target.add_script_tag(path=str(AXE))
            result = await target.evaluate(
                "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
            )
            if result:
                found[path] = result
            if target is not page:
                await probe.close()
        await context.close()
    assert found == {}

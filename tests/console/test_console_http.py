"""The console's guards over real HTTPS (no browser): headers, sign-in, the rate limit,
CSRF, a viewer's forged write, sessions, and operator certificates."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from orchestrator.store.database import Store
from tests.console.conftest import PASSWORD, ConsoleCity, sign_in_form, started_console

pytestmark = pytest.mark.integration


def audit(console: ConsoleCity) -> list[dict[str, object]]:
    store = Store.open(console.city.config.store_url)
    try:
        with store.engine.connect() as conn:
            return store.audit_entries(conn)
    finally:
        store.close()


def screen_rows(text: str) -> list[list[str]]:
    """The audit screen's rows as the reader sees them: id, then each cell's text."""
    rows = []
    for entry, cells in re.findall(r"<tr data-entry=\"(\d+)\">(.*?)</tr>", text, re.S):
        rows.append(
            [entry, *(html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S))]
        )
    return rows


async def test_the_audit_export_is_the_screens_filtered_entries_with_formulas_neutralised(
    console: ConsoleCity,
) -> None:
    console.account("ada", "admin", ["*"])
    console.account("otto", "operator", ["*"])
    # More entries than one ListAudit page (1,000), whose actor or detail looks like a
    # formula to a spreadsheet, and some of another action that the filter leaves out.
    actors = ("=1+2", "@SUM(1+1)*cmd|' /C calc'!A0", "+33 6 12")
    store = Store.open(console.city.config.store_url)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    try:
        with store.engine.begin() as conn:
            for i in range(1_030):
                store.audit(
                    conn,
                    at=start + timedelta(seconds=i),
                    actor=actors[i % 3],
                    action="test.bulk" if i % 10 else "test.other",
                    target=f"dijon-{i:04d}",
                    commune="Dijon",
                    result="ok",
                    detail="-1+1" if i == 7 else 'fine, "quoted"\nline',
                )
    finally:
        store.close()
    # The filters as typed in the screen: an action, and a time in the site's zone.
    since = (start + timedelta(seconds=300)).astimezone(ZoneInfo("Europe/Paris"))
    query = urlencode({"action": "test.other", "since": since.strftime("%Y-%m-%dT%H:%M:%S")})
    client, _ = await console.signed_in("ada")
    async with client:
        shown: list[list[str]] = []
        page_url = f"{console.url}/audit?{query}"
        while page_url:
            async with client.get(page_url) as page:
                assert page.status == 200
                text = await page.text()
            shown += screen_rows(text)
            following = re.search(r'<a href="([^"]*)" id="next-page">', text)
            page_url = console.url + html.unescape(following.group(1)) if following else ""
        assert len(shown) == 73  # i = 300, 310, ... 1020: more than a screen's page
        export_link = re.search(r'<a href="([^"]*)" id="export" download>', text)
        assert export_link and html.unescape(export_link.group(1)) == f"/audit.csv?{query}"
        async with client.get(console.url + f"/audit.csv?{query}") as export:
            assert export.status == 200
            assert export.content_type == "text/csv"
            assert "attachment" in export.headers["Content-Disposition"]
            rows = list(csv.reader(io.StringIO(await export.text())))
        assert rows[0] == ["id", "at", "actor", "action", "target", "commune", "result", "detail"]
        # The screen's entries, in its order, with its texts; a formula kept as text
        # behind an apostrophe.
        assert [r[0] for r in rows[1:]] == [r[0] for r in shown]
        for row, on_screen in zip(rows[1:], shown, strict=True):
            expected = [("'" + c if c[:1] in ("=", "+", "-", "@") else c) for c in on_screen[2:]]
            assert [row[2], row[3], row[4], row[5], row[6], row[7]] == expected
            assert row[2].startswith("'") and row[2][1:] in actors
        # Every filtered entry, past the first ListAudit page.
        async with client.get(console.url + "/audit.csv?action=test.bulk") as export:
            bulk = list(csv.reader(io.StringIO(await export.text())))[1:]
        assert len(bulk) == 1_030 - 103
        assert [int(r[0]) for r in bulk] == sorted({int(r[0]) for r in bulk})
        assert {r[3] for r in bulk} == {"test.bulk"}
        assert {r[2] for r in bulk} == {"'" + a for a in actors}
        assert [r[7] for r in bulk if r[4] == "dijon-0007"] == ["'-1+1"]
        assert 'fine, "quoted"\nline' in {r[7] for r in bulk}
        assert not [c for r in bulk + rows[1:] for c in r if c[:1] in ("=", "+", "-", "@")]
    # An operator is not an admin: refused, and no CSV.
    client, _ = await console.signed_in("otto")
    async with client, client.get(console.url + "/audit.csv") as refused_export:
        assert refused_export.status == 403
        assert refused_export.content_type == "text/html"
        assert "test.bulk" not in await refused_export.text()


async def test_every_answer_carries_a_strict_csp_and_no_page_has_inline_script(
    console: ConsoleCity,
) -> None:
    console.account("alice", "operator", ["*"])
    client, _ = await console.signed_in("alice")
    async with client:
        for path in ("/sign-in", "/", "/campaigns", "/static/console.js", "/nowhere"):
            async with client.get(console.url + path) as answer:
                csp = answer.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
                assert "frame-ancestors 'none'" in csp
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
                assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
                text = await answer.text()
                if answer.content_type == "text/html":
                    # Every <script> has a src: nothing inline for the CSP to refuse.
                    for chunk in text.split("<script")[1:]:
                        assert chunk.lstrip().startswith("src="), (path, chunk[:80])
                    assert " style=" not in text and "onclick" not in text, path


async def test_session_cookie_is_secure_httponly_samesite_and_sign_out_ends_it(
    console: ConsoleCity,
) -> None:
    console.account("alice", "operator", ["*"])
    client = console.client()
    async with client:
        token = await sign_in_form(client, console.url)
        async with client.post(
            f"{console.url}/sign-in",
            data={
                "form_token": token,
                "name": "alice",
                "password": PASSWORD,
                "code": console.code("alice"),
            },
            allow_redirects=False,
        ) as answer:
            assert answer.status == 303
            cookie = answer.headers.getall("Set-Cookie")
        session = next(c for c in cookie if c.startswith("__Host-ondijon-session="))
        for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
            assert attribute in session
        async with client.get(console.url + "/") as page:
            text = await page.text()
            assert page.status == 200 and "alice" in text
        csrf = text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        async with client.post(
            console.url + "/sign-out", data={"csrf": csrf}, allow_redirects=False
        ) as out:
            assert out.status == 303
        # The old cookie no longer opens anything, even if the browser kept it.
        client.cookie_jar.update_cookies(
            {"__Host-ondijon-session": session.split("=", 1)[1].split(";", 1)[0]}
        )
        async with client.get(console.url + "/", allow_redirects=False) as again:
            assert again.status == 303 and again.headers["Location"] == "/sign-in"


async def test_a_wrong_code_or_password_is_refused_and_audited(console: ConsoleCity) -> None:
    console.account("alice", "operator", ["*"])
    client = console.client()
    async with client:
        right = console.code("alice")
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        for password, code in ((PASSWORD, wrong), ("not the password!", right)):
            token = await sign_in_form(client, console.url)
            async with client.post(
                f"{console.url}/sign-in",
                data={"form_token": token, "name": "alice", "password": password, "code": code},
                allow_redirects=False,
            ) as answer:
                assert answer.status == 401
                assert "incorrect" in await answer.text()
    refused = [e for e in audit(console) if e["action"] == "console.sign_in"]
    assert [e["result"] for e in refused] == ["refused", "refused"]
    assert all(PASSWORD not in str(e) and right not in str(e) for e in refused)


async def test_a_code_is_used_once(console: ConsoleCity) -> None:
    console.account("alice", "operator", ["*"])
    code = console.code("alice")  # the same code twice, even if its 30 s end meanwhile
    client, _ = await console.signed_in("alice", code=code)
    await client.close()
    other = console.client()
    async with other:
        token = await sign_in_form(other, console.url)
        async with other.post(
            f"{console.url}/sign-in",
            data={
                "form_token": token,
                "name": "alice",
                "password": PASSWORD,
                "code": code,
            },
            allow_redirects=False,
        ) as answer:
            assert answer.status == 401


async def test_sign_in_attempts_are_rate_limited(tmp_path: Path, ca: object) -> None:
    async with started_console(tmp_path, ca, sign_in_per_minute=3) as console:  # type: ignore[arg-type]
        console.account("alice", "operator", ["*"])
        client = console.client()
        statuses = []
        async with client:
            for _ in range(5):
                token = await sign_in_form(client, console.url)
                async with client.post(
                    f"{console.url}/sign-in",
                    data={
                        "form_token": token,
                        "name": "alice",
                        "password": "x" * 12,
                        "code": "000000",
                    },
                    allow_redirects=False,
                ) as answer:
                    statuses.append(answer.status)
            # Even the right password and code wait now: the account is being guessed at.
            token = await sign_in_form(client, console.url)
            async with client.post(
                f"{console.url}/sign-in",
                data={
                    "form_token": token,
                    "name": "alice",
                    "password": PASSWORD,
                    "code": console.code("alice"),
                },
                allow_redirects=False,
            ) as answer:
                statuses.append(answer.status)
        assert statuses == [401, 401, 401, 429, 429, 429]
        limited = [e for e in audit(console) if e["detail"] == "too many sign-in attempts"]
        assert len(limited) == 3


async def test_a_viewers_forged_override_is_refused_and_audited(console: ConsoleCity) -> None:
    await console.city.register("dijon-01")
    console.account("vera", "viewer", ["*"])
    client, csrf = await console.signed_in("vera")
    async with client:
        async with client.get(console.url + "/gateways/dijon-01") as page:
            text = await page.text()
        assert page.status == 200
        assert "<form" not in text.split("</header>", 1)[1]  # no write control at all
        async with client.post(
            console.url + "/gateways/dijon-01/override",
            data={"csrf": csrf, "level": "100", "minutes": "30", "confirmed": "yes"},
            allow_redirects=False,
        ) as forged:
            assert forged.status == 403
            assert "viewer may not do this" in await forged.text()
    entries = [e for e in audit(console) if e["action"] == "command.send"]
    assert len(entries) == 1
    assert entries[0]["result"] == "refused"
    assert entries[0]["actor"] == "spiffe://ondijon/operator/vera"


async def test_a_write_without_the_csrf_token_or_from_another_origin_is_refused(
    console: ConsoleCity,
) -> None:
    await console.city.register("dijon-01")
    console.account("alice", "operator", ["*"])
    client, csrf = await console.signed_in("alice")
    async with client:
        form = {"level": "100", "minutes": "30", "confirmed": "yes"}
        async with client.post(
            console.url + "/gateways/dijon-01/override", data=form, allow_redirects=False
        ) as missing:
            assert missing.status == 403
        async with client.post(
            console.url + "/gateways/dijon-01/override",
            data={**form, "csrf": csrf},
            headers={"Origin": "https://evil.example"},
            allow_redirects=False,
        ) as foreign:
            assert foreign.status == 403
        async with client.post(
            console.url + "/gateways/dijon-01/override",
            data={**form, "csrf": csrf},
            allow_redirects=False,
        ) as good:
            assert good.status == 303 and good.headers["Location"].startswith("/commands/")
    entries = audit(console)
    assert [e["detail"] for e in entries if e["action"] == "console.request"] == [
        "missing or wrong CSRF token",
        "cross-site request (Origin does not match)",
    ]
    sent = [e for e in entries if e["action"] == "command.send"]
    assert [e["result"] for e in sent] == ["ok"]


async def test_an_operator_outside_the_commune_sees_the_cabinet_as_missing(
    console: ConsoleCity,
) -> None:
    await console.city.register("dijon-01", commune="Dijon")
    console.account("chenove", "operator", ["Chenôve"])
    client, _ = await console.signed_in("chenove")
    async with client:
        async with client.get(console.url + "/gateways/dijon-01") as page:
            assert page.status == 404
        async with client.get(console.url + "/fleet.json") as fleet:
            assert (await fleet.json())["gateways"] == []


async def test_an_operator_certificate_signs_in_without_a_password(
    console: ConsoleCity,
) -> None:
    profile = console.city.operator("olga", "operator", ["*"])
    context = console.tls()
    context.load_cert_chain(profile.directory / "operator.pem", profile.directory / "operator.key")
    client = console.client(ssl=context)
    async with client, client.get(console.url + "/sign-in/certificate") as answer:
        assert answer.status == 200
        assert "olga" in await answer.text()
    # A browser without the certificate gets nothing from that cookie... nor this one.
    bare = console.client()
    async with bare, bare.get(console.url + "/sign-in/certificate") as answer:
        assert answer.status == 401

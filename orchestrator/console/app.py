"""The console's HTTP side (aiohttp): routes, the security middleware, and its server.

Every response carries a strict Content-Security-Policy (scripts and styles only from the
console itself, nothing inline, no frames), HSTS, ``nosniff`` and a same-origin referrer
policy. Every page but sign-in needs a session; every POST must carry the session's CSRF token (form
field ``csrf`` or header ``X-CSRF-Token``) and, when the browser sends one, an ``Origin``
of this console; a request failing that is refused and audited. Writes then go to the
admin API's services, which check the role and communes again and audit the outcome.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2

from foundation.clock import Clock
from orchestrator.access.gate import OPERATOR, RANK, VIEWER, Caller
from orchestrator.access.peers import AuthError, ConsoleCall, Peer, Refused, peer_of_certificate
from orchestrator.audit.log import Auditor
from orchestrator.console import pages
from orchestrator.console.alarms import AlarmScreen
from orchestrator.console.audit import AuditScreen
from orchestrator.console.citymap import CityMap
from orchestrator.console.convergence import ConvergenceScreen
from orchestrator.console.energy import EnergyScreen
from orchestrator.console.live import live_feed
from orchestrator.console.playbooks import PlaybookScreen
from orchestrator.console.schedules import ScheduleScreen
from orchestrator.console.services import Context, Services
from orchestrator.console.signin import (
    COOKIE,
    SIGN_IN_COOKIE,
    Session,
    SignIn,
    SignInRefused,
    same_token,
)
from orchestrator.console.states import LiveStates
from orchestrator.console.tls import ConsoleTls
from orchestrator.console.words import words
from protos.ondijon.v1 import control_pb2, firmware_pb2, link_pb2, schedule_pb2

log = logging.getLogger("ondijon.orchestrator")

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = ("/sign-in", "/static/", "/favicon.ico")
SESSION = web.RequestKey("session", Session)
ROLE = web.RequestKey("role", str)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


def content_security_policy(tiles_url: str) -> str:
    img = "'self' data:"
    if tiles_url:
        scheme, _, rest = tiles_url.partition("://")
        img += f" {scheme}://{rest.split('/', 1)[0]}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; font-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


@dataclass
class Console:
    """The console's parts: the services it calls, sign-in, the live states of the
    cabinets its pages follow, and its settings."""

    services: Services
    sign_in: SignIn
    audit: Auditor
    clock: Clock
    states: LiveStates
    tiles_url: str = ""

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def lang(request: web.Request) -> str:
        chosen = request.query.get("lang") or request.cookies.get("lang", "fr")
        return chosen if chosen in ("fr", "en") else "fr"

    def page(
        self,
        request: web.Request,
        title: str,
        body: str,
        *,
        status: int = 200,
        live: str = "",
    ) -> web.Response:
        lang = self.lang(request)
        session = request.get(SESSION)
        who = role = csrf = ""
        if session is not None:
            who, csrf = session.peer.identity.name, session.csrf_token
            role = request.get(ROLE, "")
        html = pages.layout(
            words(lang), title, body, lang=lang, who=who, role=role, csrf=csrf, live=live
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        if "lang" in request.query and request.query["lang"] in ("fr", "en"):
            response.set_cookie(
                "lang", lang, secure=True, httponly=True, samesite="Strict", max_age=31536000
            )
        return response

    def refused(self, request: web.Request, exc: Refused) -> web.Response:
        status = HTTP_STATUS.get(exc.code, 500)
        if request.path.endswith(".json"):
            return web.json_response({"error": exc.message}, status=status)
        w = words(self.lang(request))
        return self.page(
            request, w["refused"], pages.message_page(w["refused"], exc.message), status=status
        )

    @staticmethod
    def call(request: web.Request) -> Context:
        """The context the services get: the signed-in operator (as gRPC's would be)."""
        return cast(Context, ConsoleCall(request[SESSION].peer))

    async def caller(self, request: web.Request) -> Caller:
        caller = await self.services.gate.caller(self.call(request), VIEWER, None)
        request[ROLE] = caller.operator.role
        return caller

    @staticmethod
    def csrf(request: web.Request) -> str:
        return request[SESSION].csrf_token

    @staticmethod
    def may_write(caller: Caller) -> bool:
        return RANK.get(caller.operator.role, -1) >= RANK[OPERATOR]

    # -- sign-in ------------------------------------------------------------------------

    async def sign_in_form(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.StreamResponse:
        w = words(self.lang(request))
        # One token per browser while it signs in: a second tab, or the browser's own
        # request for /favicon.ico sent here, must not invalidate the form on screen.
        token = request.cookies.get(SIGN_IN_COOKIE, "")
        if not 20 <= len(token) <= 64:
            token = secrets.token_urlsafe(24)
        body = pages.sign_in_page(
            w, error=error, form_token=token, certificate=presented_peer(request) is not None
        )
        response = self.page(request, w["sign_in"], body, status=status)
        response.set_cookie(
            SIGN_IN_COOKIE, token, secure=True, httponly=True, samesite="Strict", max_age=900
        )
        return response

    async def sign_in_get(self, request: web.Request) -> web.StreamResponse:
        return await self.sign_in_form(request)

    async def sign_in_post(self, request: web.Request) -> web.StreamResponse:
        w = words(self.lang(request))
        form = await request.post()
        if not same_token(str(form.get("form_token", "")), request.cookies.get(SIGN_IN_COOKIE, "")):
            return await self.sign_in_form(request, w["wrong"], 400)
        try:
            session = await self.sign_in.with_password(
                str(form.get("name", ""))[:64],
                str(form.get("password", "")),
                str(form.get("code", ""))[:16],
                request.remote or "",
            )
        except SignInRefused as exc:
            status = 429 if exc.limited else 401
            return await self.sign_in_form(
                request, w["too_many" if exc.limited else "wrong"], status
            )
        return self.signed_in(session)

    async def sign_in_certificate(self, request: web.Request) -> web.StreamResponse:
        peer = presented_peer(request)
        w = words(self.lang(request))
        if peer is None:
            return await self.sign_in_form(request, w["wrong"], 401)
        try:
            await self.services.gate.caller(cast(Context, ConsoleCall(peer)), VIEWER, None)
            session = await self.sign_in.with_certificate(peer)
        except Refused as exc:
            return await self.sign_in_form(request, exc.message, HTTP_STATUS.get(exc.code, 403))
        except SignInRefused as exc:
            return await self.sign_in_form(request, exc.reason, 403)
        return self.signed_in(session)

    def signed_in(self, session: Session) -> web.StreamResponse:
        response = redirect("/")
        max_age = max(1, int(session.expires_at_ts - self.clock.now().timestamp()))
        response.set_cookie(
            COOKIE, session.token, secure=True, httponly=True, samesite="Strict", max_age=max_age
        )
        response.del_cookie(SIGN_IN_COOKIE, secure=True, httponly=True, samesite="Strict")
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        await self.sign_in.sign_out(request[SESSION])
        response = redirect("/sign-in")
        response.del_cookie(COOKIE, secure=True, httponly=True, samesite="Strict")
        return response

    # -- screens ------------------------------------------------------------------------

    async def whole_fleet(self, request: web.Request) -> list[control_pb2.FleetGateway]:
        """The fleet a page at a time (the City service's ``ListFleet``)."""
        found: list[control_pb2.FleetGateway] = []
        token = ""
        while True:
            page = await self.services.city.ListFleet(
                control_pb2.ListFleetRequest(page_token=token, page_size=1000),
                self.call(request),
            )
            found.extend(page.gateways)
            token = page.next_page_token
            if not token:
                return found

    async def fleet(self, request: web.Request) -> web.StreamResponse:
        await self.caller(request)
        gateways = await self.whole_fleet(request)
        w = words(self.lang(request))
        focus = request.query.get("focus", "")[:128]
        body = pages.fleet_page(w, gateways, tiles_url=self.tiles_url, focus=focus)
        return self.page(request, w["fleet"], body, live="/live")

    async def fleet_json(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "gateways": [
                    {
                        "id": g.gateway_id,
                        "commune": g.commune,
                        "connected": g.connected,
                        "firmware": g.firmware_version,
                    }
                    for g in await self.whole_fleet(request)
                ]
            }
        )

    async def cabinet(self, request: web.Request) -> web.StreamResponse:
        caller = await self.caller(request)
        gateway_id = request.match_info["gateway_id"]
        call = self.call(request)
        control = self.services.control
        gateway = (
            await control.GetGateway(control_pb2.GetGatewayRequest(gateway_id=gateway_id), call)
        ).gateway
        devices = await control.ListDevices(
            control_pb2.ListDevicesRequest(gateway_id=gateway_id), call
        )
        events = await control.ListEvents(
            control_pb2.ListEventsRequest(
                gateway_id=gateway_id,
                after_sequence=max(0, gateway.stored_sequence - 50),
                limit=50,
            ),
            call,
        )
        w = words(self.lang(request))
        body = pages.cabinet_page(
            w,
            gateway,
            devices.devices,
            events.events,
            may_write=self.may_write(caller),
            csrf=request[SESSION].csrf_token,
        )
        return self.page(
            request, f"{w['gateway']} {gateway_id}", body, live=f"/live?gateway={gateway_id}"
        )

    async def devices_json(self, request: web.Request) -> web.StreamResponse:
        gateway_id = request.match_info["gateway_id"]
        devices = await self.services.control.ListDevices(
            control_pb2.ListDevicesRequest(gateway_id=gateway_id), self.call(request)
        )
        return web.json_response(
            {
                "devices": [
                    {"id": d.device_id, "state": pages.device_summary(d)} for d in devices.devices
                ]
            }
        )

    async def command(self, request: web.Request) -> web.StreamResponse:
        """A lamp override, an override's cancellation, a bollard action or a crossing's
        mode, with a confirmation step; sent by the admin API's SendCommand."""
        caller = await self.caller(request)
        gateway_id = request.match_info["gateway_id"]
        what = request.match_info["what"]
        form = await request.post()
        fields = {k: str(v) for k, v in form.items() if k not in ("csrf", "confirmed")}
        w = words(self.lang(request))
        try:
            command, summary = build_command(what, fields, self.clock)
        except ValueError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        # A role that may not write skips the confirmation: the service refuses and audits.
        if form.get("confirmed") != "yes" and self.may_write(caller):
            body = pages.confirm_page(
                w,
                request.path,
                fields,
                f"{gateway_id}: {summary}",
                request[SESSION].csrf_token,
            )
            return self.page(request, w["confirm_title"], body)
        sent = await self.services.control.SendCommand(
            control_pb2.SendCommandRequest(gateway_id=gateway_id, command=command),
            self.call(request),
        )
        raise web.HTTPSeeOther(f"/commands/{sent.command_id}")

    async def command_status(self, request: web.Request) -> web.StreamResponse:
        await self.caller(request)
        command_id = request.match_info["command_id"]
        # `?wait`: the page follows a pending command; answered as soon as the gateway
        # answers (or after 10 s), instead of being asked again every second.
        waits = command_id.endswith(".json") and "wait" in request.query
        answer = await self.services.control.GetCommand(
            control_pb2.GetCommandRequest(
                command_id=command_id.removesuffix(".json"), wait_ms=10_000 if waits else 0
            ),
            self.call(request),
        )
        if command_id.endswith(".json"):
            return web.json_response(
                {
                    "status": link_pb2.CommandStatus.Name(answer.status).removeprefix(
                        "COMMAND_STATUS_"
                    ),
                    "detail": answer.detail,
                }
            )
        w = words(self.lang(request))
        return self.page(request, w["command"], pages.command_page(w, answer))

    async def campaigns(self, request: web.Request) -> web.StreamResponse:
        caller = await self.caller(request)
        listed = await self.services.campaigns.ListCampaigns(
            firmware_pb2.ListCampaignsRequest(), self.call(request)
        )
        w = words(self.lang(request))
        body = pages.campaigns_page(
            w,
            listed.campaigns,
            may_write=self.may_write(caller),
            csrf=request[SESSION].csrf_token,
        )
        return self.page(request, w["campaigns"], body)

    async def campaign_action(self, request: web.Request) -> web.StreamResponse:
        campaign_id, act = request.match_info["campaign_id"], request.match_info["act"]
        form = await request.post()
        reason = str(form.get("reason", ""))[:256] or "from the console"
        call, api = self.call(request), self.services.campaigns
        if act == "pause":
            await api.PauseCampaign(
                firmware_pb2.PauseCampaignRequest(campaign_id=campaign_id, reason=reason), call
            )
        elif act == "resume":
            await api.ResumeCampaign(
                firmware_pb2.ResumeCampaignRequest(campaign_id=campaign_id), call
            )
        elif act == "abort":
            await api.AbortCampaign(
                firmware_pb2.AbortCampaignRequest(campaign_id=campaign_id, reason=reason), call
            )
        else:
            raise web.HTTPNotFound()
        raise web.HTTPSeeOther("/campaigns")

    async def live(self, request: web.Request) -> web.StreamResponse:
        return await live_feed(
            request,
            self.services.control,
            self.services.gate,
            self.states,
            self.call(request),
        )

    # -- middleware ---------------------------------------------------------------------

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Headers on every answer; a session for every page but sign-in; CSRF on writes."""
        try:
            response = await self._guarded(request, handler)
        except web.HTTPException as exc:
            self._secure(request, exc.headers)
            raise
        except Refused as exc:
            response = self.refused(request, exc)
        self._secure(request, response.headers)
        return response

    def _secure(self, request: web.Request, headers: Any) -> None:
        headers["Content-Security-Policy"] = content_security_policy(self.tiles_url)
        headers["Strict-Transport-Security"] = "max-age=31536000"
        headers["X-Content-Type-Options"] = "nosniff"
        # "no-referrer" would make browsers send "Origin: null" on our own forms.
        headers["Referrer-Policy"] = "same-origin"
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if not request.path.startswith("/static/"):
            headers.setdefault("Cache-Control", "no-store")

    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(PUBLIC):
            return await handler(request)
        session = await self.sign_in.session(
            request.cookies.get(COOKIE, ""), presented_peer(request)
        )
        if session is None:
            if request.method == "GET" and not request.path.endswith(".json"):
                raise web.HTTPSeeOther("/sign-in")
            raise web.HTTPUnauthorized(text="sign in first")
        request[SESSION] = session
        if request.method not in ("GET", "HEAD"):
            await self._check_csrf(request, session)
        return await handler(request)

    async def _check_csrf(self, request: web.Request, session: Session) -> None:
        origin = request.headers.get("Origin")
        given = request.headers.get("X-CSRF-Token", "")
        if not given and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            given = str((await request.post()).get("csrf", ""))
        why = ""
        if origin is not None and origin != f"https://{request.host}":
            why = "cross-site request (Origin does not match)"
        elif not same_token(given, session.csrf_token):
            why = "missing or wrong CSRF token"
        if why:
            await self.audit.record(
                actor=str(session.peer.identity),
                action="console.request",
                target=request.path[:200],
                result="refused",
                detail=why,
            )
            raise web.HTTPForbidden(text=f"refused: {why}")


def build_command(what: str, fields: dict[str, str], clock: Clock) -> tuple[link_pb2.Command, str]:
    """The admin API command a console form asks for, and a line saying what it does.
    Raises ValueError naming the field; every other check is the service's."""
    now = clock.now()

    def number(name: str, low: int, high: int) -> int:
        try:
            value = int(fields.get(name, ""))
        except ValueError:
            raise ValueError(f"{name}: a whole number is required") from None
        if not low <= value <= high:
            raise ValueError(f"{name}: between {low} and {high}")
        return value

    def stamp(minutes: int) -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(now + timedelta(minutes=minutes))
        return ts

    command = link_pb2.Command(command_id=uuid.uuid4().hex)
    if what == "override":
        level, minutes = number("level", 0, 100), number("minutes", 1, 7 * 24 * 60)
        devices = [d.strip() for d in fields.get("devices", "").split(",") if d.strip()]
        override = schedule_pb2.Override(
            id=uuid.uuid4().hex[:12],
            priority=50,
            kind=schedule_pb2.DEVICE_KIND_LAMP,
            device_ids=devices,
            lamp_level=level,
        )
        override.start.FromDatetime(now)
        override.expiry.CopyFrom(stamp(minutes))
        command.override.CopyFrom(override)
        command.expires_at.CopyFrom(stamp(minutes))
        where = ", ".join(devices) if devices else "every lamp"
        return command, f"lamps {level} % for {minutes} min ({where})"
    command.expires_at.CopyFrom(stamp(60))
    if what == "cancel-override":
        command.cancel_override = fields.get("override_id", "")
        return command, f"cancel override {command.cancel_override}"
    if what == "bollard":
        action = fields.get("action", "")
        if action not in link_pb2.BollardAction.keys():  # noqa: SIM118
            raise ValueError("action: unknown bollard action")
        command.bollard.device_id = fields.get("device", "")
        command.bollard.action = link_pb2.BollardAction.Value(action)
        return command, f"bollard {command.bollard.device_id}: {action.lower()}"
    if what == "crossing":
        minutes = number("minutes", 1, 7 * 24 * 60)
        override = schedule_pb2.Override(
            id=uuid.uuid4().hex[:12],
            priority=50,
            kind=schedule_pb2.DEVICE_KIND_SIGNAL,
            device_ids=[fields.get("device", "")],
        )
        if fields.get("mode") == "flash":
            override.signal_mode = schedule_pb2.SIGNAL_MODE_FLASHING_AMBER
            summary = "flashing amber"
        else:
            override.signal_mode = schedule_pb2.SIGNAL_MODE_NORMAL
            override.signal_plan = fields.get("plan", "")
            summary = f"plan {override.signal_plan}"
        override.start.FromDatetime(now)
        override.expiry.CopyFrom(stamp(minutes))
        command.override.CopyFrom(override)
        command.expires_at.CopyFrom(stamp(minutes))
        return command, f"crossing {fields.get('device', '')}: {summary} for {minutes} min"
    raise ValueError(f"command: unknown command {what!r}")


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def presented_peer(request: web.Request) -> Peer | None:
    """The operator certificate the browser presented (TLS verified it against the CA)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return None
    try:
        return peer_of_certificate(ssl.DER_cert_to_PEM_cert(der).encode())
    except AuthError:
        return None


def application(console: Console) -> web.Application:
    app = web.Application(middlewares=[console.guard], client_max_size=256 * 1024)
    r = app.router
    r.add_get("/sign-in", console.sign_in_get)
    r.add_post("/sign-in", console.sign_in_post)
    r.add_get("/sign-in/certificate", console.sign_in_certificate)
    r.add_post("/sign-out", console.sign_out)
    r.add_get("/", console.fleet)
    r.add_get("/fleet.json", console.fleet_json)
    r.add_get("/gateways/{gateway_id}", console.cabinet)
    r.add_get("/gateways/{gateway_id}/devices.json", console.devices_json)
    r.add_post("/gateways/{gateway_id}/{what}", console.command)
    r.add_get("/commands/{command_id}", console.command_status)
    r.add_get("/campaigns", console.campaigns)
    r.add_post("/campaigns/{campaign_id}/{act}", console.campaign_action)
    r.add_get("/live", console.live)
    for screen in (
        AlarmScreen,
        EnergyScreen,
        PlaybookScreen,
        ConvergenceScreen,
        CityMap,
        ScheduleScreen,
        AuditScreen,
    ):
        screen(console).add_routes(r)
    r.add_static("/static/", STATIC, follow_symlinks=False)
    return app


@dataclass
class ConsoleServer:
    """The console listening on its HTTPS port."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def serve_console(
    console: Console, listen: str, cert: Path, key: Path, client_ca: Path
) -> ConsoleServer:
    """Start the console on ``listen`` (``host:port``; port 0 picks one)."""
    tls = ConsoleTls(cert, key, client_ca)
    runner = web.AppRunner(application(console), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host, int(port), ssl_context=tls.context)
    await site.start()
    bound = int(runner.addresses[0][1])
    log.info("console listening: HTTPS on %d", bound)
    return ConsoleServer(runner, bound)

"""The public HTTPS endpoint: open data and citizens' reports, no login (aiohttp, as the
console).

- ``GET /opendata/`` the list of files; ``GET /opendata/<file>`` any file of the current
  export (``catalogue.jsonld``, ``datapackage.json``, ``<dataset>.csv|.geojson|
  .ngsi-ld.json``, ``schemas/...``). Served from memory: the export is rebuilt from the
  store every ``refresh_s`` in the background, never on a request. Every file has a strong
  ``ETag`` (its SHA-256) and a ``Last-Modified`` (when its content last changed); a
  request with ``If-None-Match`` or ``If-Modified-Since`` that still holds gets
  ``304 Not Modified``; ``Cache-Control: public, max-age=refresh_s``.
- ``GET /report`` the page to report a lamp out or a damaged bollard;
  ``GET /api/reports/challenge`` a proof-of-work challenge; ``POST /api/reports`` a report
  (JSON), answered ``201`` with its reference; ``GET /api/reports/<reference>`` its progress.
- read-only otherwise: any other method is ``405``.

Each client address has a budget of requests (``requests_per_s``/``request_burst``) and
of reports (``reports_per_hour``/``report_burst``); over it: ``429`` with ``Retry-After``.
Addresses live only in those in-memory buckets (bounded, least recent forgotten) and are
never logged or stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from domain.opendata.catalogue import Publisher
from domain.opendata.reports import ReportError
from foundation.clock import Clock
from orchestrator.access.limits import BucketMap
from orchestrator.public.export import Export, build
from orchestrator.public.reports import ReportService
from orchestrator.store.runner import StoreRunner

log = logging.getLogger("ondijon.orchestrator.public")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 4096
MAX_KEYS = 100_000
CONTENT_TYPES = {
    ".csv": "text/csv; charset=utf-8; header=present",
    ".geojson": "application/geo+json",
    ".jsonld": "application/ld+json",
    ".json": "application/json",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Resource:
    body: bytes
    etag: str
    last_modified: datetime
    content_type: str


@dataclass
class Snapshot:
    resources: dict[str, Resource] = field(default_factory=dict)
    generated_at: datetime | None = None


def snapshot_of(export: Export, previous: Snapshot) -> Snapshot:
    """Resources of ``export``; a file whose content did not change keeps its
    Last-Modified (re-users' conditional requests keep hitting)."""
    at = export.generated_at.replace(microsecond=0)
    resources = {}
    for name, body in export.files.items():
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        before = previous.resources.get(name)
        modified = before.last_modified if before is not None and before.etag == etag else at
        suffix = name[name.rfind(".") :]
        resources[name] = Resource(body, etag, modified, CONTENT_TYPES.get(suffix, "text/plain"))
    return Snapshot(resources, at)


@dataclass(frozen=True)
class Budgets:
    requests_per_s: float = 20.0
    request_burst: int = 100
    reports_per_hour: float = 10.0
    report_burst: int = 3


class PublicSite:
    """The public side's state: the current export in memory, the buckets, the reports."""

    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        publisher: Publisher,
        reports: ReportService,
        refresh_s: float,
        budgets: Budgets,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.publisher = publisher
        self.reports = reports
        self.refresh_s = refresh_s
        self.snapshot = Snapshot()
        self.requests = BucketMap(budgets.requests_per_s, budgets.request_burst, MAX_KEYS)
        self.report_budget = BucketMap(
            budgets.reports_per_hour / 3600.0, budgets.report_burst, MAX_KEYS
        )
        self._ready = asyncio.Event()

    async def refresh(self) -> Snapshot:
        export = await build(self.runner, self.publisher, self.clock.now)
        self.snapshot = snapshot_of(export, self.snapshot)
        self._ready.set()
        return self.snapshot

    async def run(self) -> None:
        """Rebuild the export every ``refresh_s`` (owned by the server's task set)."""
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("open data refresh failed; serving the previous export")
            await asyncio.sleep(self.refresh_s)

    async def ready(self, timeout: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    # -- the application -----------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self._home)
        app.router.add_get("/opendata/", self._index)
        app.router.add_get("/opendata/{path:.+}", self._file)
        app.router.add_get("/report", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/reports/challenge", self._challenge)
        app.router.add_post("/api/reports", self._submit)
        app.router.add_get("/api/reports/{reference}", self._follow)
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        address = request.remote or "?"
        now = self.clock.monotonic()
        if not self.requests.take(address, 1.0, now):
            return _headers(request, _too_many(1.0))
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _headers(request, exc)
            raise
        return _headers(request, response)

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/opendata/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        snapshot = self.snapshot
        files = {
            name: {"bytes": len(r.body), "etag": r.etag, "modified": _http_date(r.last_modified)}
            for name, r in sorted(snapshot.resources.items())
        }
        body = {
            "catalogue": "catalogue.jsonld",
            "licence": self.publisher.licence,
            "generated_at": _iso(snapshot.generated_at),
            "files": files,
            "documentation": "docs/opendata.md in the OnDijon repository",
        }
        return web.json_response(body, headers={"Cache-Control": "public, max-age=60"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        resource = self.snapshot.resources.get(request.match_info["path"])
        if resource is None:
            raise web.HTTPNotFound(text="no such file: see /opendata/\n")
        headers = {
            "ETag": resource.etag,
            "Last-Modified": _http_date(resource.last_modified),
            "Cache-Control": f"public, max-age={int(self.refresh_s)}",
        }
        if _not_modified(request, resource):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=resource.body, headers=headers | {"Content-Type": resource.content_type}
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "report.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ("report.js", "report.css"):
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name)

    async def _challenge(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.reports.challenge(), headers={"Cache-Control": "no-store"})

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        if not self.report_budget.take(request.remote or "?", 1.0, self.clock.monotonic()):
            return _too_many(3600.0 / max(1e-9, self.report_budget.rate))
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _refused("body", "must be a JSON object")
        if not isinstance(body, dict):
            return _refused("body", "must be a JSON object")
        try:
            done = await self.reports.submit(body)
        except ReportError as exc:
            return _refused(exc.field, exc.reason)
        return web.json_response(
            {
                "reference": done.reference,
                "asset": done.asset_id,
                "distance_m": round(done.distance_m),
                "already_known": done.attached,
                "follow": f"/api/reports/{done.reference}",
            },
            status=201,
            headers={"Cache-Control": "no-store"},
        )

    async def _follow(self, request: web.Request) -> web.StreamResponse:
        found = await self.reports.follow(request.match_info["reference"])
        if found is None:
            raise web.HTTPNotFound(text="no such report (or deleted after its retention)\n")
        return web.json_response(found, headers={"Cache-Control": "no-store"})


def _headers(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if request.path.startswith(("/opendata/", "/api/reports/challenge")):
        # Open data is for everyone, browsers of other sites included.
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _not_modified(request: web.Request, resource: Resource) -> bool:
    match = request.headers.get("If-None-Match")
    if match is not None:
        tags = [t.strip().removeprefix("W/") for t in match.split(",")]
        return "*" in tags or resource.etag in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            when = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return resource.last_modified <= when
    return False


def _refused(field: str, reason: str) -> web.Response:
    return web.json_response({"field": field, "reason": reason}, status=422)


def _too_many(retry_after_s: float) -> web.Response:
    return web.json_response(
        {"field": "rate", "reason": "too many requests from this address"},
        status=429,
        headers={"Retry-After": str(max(1, round(retry_after_s)))},
    )


def _http_date(at: datetime) -> str:
    return email.utils.format_datetime(at.astimezone(UTC), usegmt=True)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PublicServer:
    """A started public endpoint."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve_public(site: PublicSite, listen: str, cert: Path, key: Path) -> PublicServer:
    """Listen on ``listen`` (HTTPS) and serve ``site``; port 0 picks a free port."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(site.application(), access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, host, int(port), ssl_context=tls_context(cert, key))
    await tcp.start()
    server = tcp._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else int(port)
    return PublicServer(runner, bound)

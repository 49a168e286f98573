"""Cross-replica routing: what an operator does on one replica reaches a gateway on another.

A gateway holds one stream, to one replica. When a desired document changes or a command
is queued for it, the replica that took the request delivers at once if it holds the
stream; otherwise, on PostgreSQL, it sends a ``NOTIFY`` on :data:`CHANNEL` and every replica
``LISTEN``ing delivers if the stream is its own. Nothing is lost when no replica holds the
stream: documents and commands are in the store and go out at the gateway's next hello.

On the embedded SQLite store there is one process, so delivery is always local. This is
PostgreSQL's own LISTEN/NOTIFY: no home-made queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import sqlalchemy as sa

from orchestrator.app import Orchestrator
from orchestrator.link import send_newer_documents, send_pending_commands

log = logging.getLogger("ondijon.orchestrator.routing")

CHANNEL = "ondijon_gateways"
DOCUMENTS, COMMANDS, REVOKED = "documents", "commands", "revoked"
RECONNECT_SECONDS = 2.0


class Router:
    """Delivers document and command news to the replica that holds the gateway's stream."""

    def __init__(self, app: Orchestrator) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    @property
    def shared(self) -> bool:
        """Several replicas may share the store (PostgreSQL)."""
        return self.app.runner.store.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        if self.shared:
            self._task = asyncio.create_task(self._listen(), name="routing")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def documents_changed(self, gateway_id: str) -> None:
        await self._route(DOCUMENTS, gateway_id)

    async def commands_queued(self, gateway_id: str) -> None:
        await self._route(COMMANDS, gateway_id)

    async def certificates_revoked(self, serials: list[str]) -> None:
        """Tell the other replicas to close their streams opened with ``serials`` now,
        rather than at their next sweep (the revoking replica closed its own)."""
        if self.shared and serials:
            await self._notify({"what": REVOKED, "serials": serials})

    async def _route(self, what: str, gateway_id: str) -> None:
        if self.app.hub.session(gateway_id) is not None or not self.shared:
            await self.deliver(what, gateway_id)
            return
        await self._notify({"what": what, "gateway": gateway_id})

    async def _notify(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message)
        await self.app.runner.write(
            lambda c: c.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": payload},
            )
        )

    async def deliver(self, what: str, gateway_id: str) -> None:
        """Send what waits for ``gateway_id`` if its stream is held here."""
        session = self.app.hub.session(gateway_id)
        if session is None:
            return
        if what == DOCUMENTS:
            store = self.app.runner.store
            held = await self.app.runner.read(lambda c: store.held_for(c, gateway_id))
            await send_newer_documents(self.app, session, {h.kind: h for h in held})
        elif what == COMMANDS:
            await send_pending_commands(self.app, session)

    async def _listen(self) -> None:
        import psycopg

        url = self.app.runner.store.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(sa.text(f"LISTEN {CHANNEL}").text)
                    self.listening.set()
                    async for notice in conn.notifies():
                        await self._on_notice(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost database connection: listen again
                self.listening.clear()
                log.warning("routing listener lost (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _on_notice(self, payload: str) -> None:
        try:
            message: Any = json.loads(payload)
            what = str(message["what"])
            if what == REVOKED:
                from orchestrator.revocation import close_streams  # it builds on routing's app

                close_streams(self.app, {str(s) for s in message["serials"]})
                return
            gateway_id = str(message["gateway"])
        except (ValueError, KeyError, TypeError):
            log.warning("routing: ignored a malformed notice")
            return
        await self.deliver(what, gateway_id)

"""City: the admin API of the city's operations (asset register, groups and targets).

Same callers, roles, scopes and audit as ControlCentre (:mod:`orchestrator.api.control`):
viewers read, operators put documents and send commands, admins import the register. A
target must lie wholly within the caller's communes (the city needs ``*``); a refusal names
the field and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from domain.city.inventory import Asset, AssetKind, InventoryError
from domain.city.targets import (
    Level,
    Site,
    Target,
    TargetError,
    candidates,
    covered,
    covered_sites,
)
from foundation.clock import Clock
from foundation.errors import FieldError
from orchestrator.access.gate import ADMIN, OPERATOR, VIEWER, Attempt, Caller, Gatekeeper
from orchestrator.assets.importer import StaleRegister, import_assets
from orchestrator.assets.wire import KINDS, NUMBERS, asset_from_proto, asset_to_proto
from orchestrator.fleet.commands import check_command
from orchestrator.fleet.documents import check_document
from orchestrator.groups.convergence import converge
from orchestrator.groups.delivery import GroupDelivery
from orchestrator.groups.wire import target_from_proto, target_to_proto
from orchestrator.ingest.checks import document_message, timestamp
from orchestrator.ingest.routing import Router
from orchestrator.store import assets as asset_sql
from orchestrator.store import groups as group_sql
from orchestrator.store.database import CommandRecord
from orchestrator.store.groups import GroupConflict, GroupDocument
from orchestrator.store.runner import StoreRunner
from protos.ondijon.v1 import control_pb2, control_pb2_grpc, link_pb2

Context = grpc.aio.ServicerContext[Any, Any]
MAX_PAGE = 1000
SAMPLE = 50
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _kind_name(kind: int) -> str:
    return (
        link_pb2.DocumentKind.Name(kind)  # type: ignore[arg-type]
        if kind in link_pb2.DocumentKind.values()
        else str(kind)
    )


class CityService(control_pb2_grpc.CityServicer):
    def __init__(
        self,
        *,
        runner: StoreRunner,
        clock: Clock,
        gate: Gatekeeper,
        router: Router,
        deliver: GroupDelivery,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.gate = gate
        self.router = router
        self.deliver = deliver

    # -- helpers -------------------------------------------------------------------------------

    async def _sites(self) -> list[Site]:
        return await self.runner.read(group_sql.sites)

    async def _in_scope(
        self, context: Context, caller: Caller, attempt: Attempt, target: Target
    ) -> list[str]:
        """Gateways ``target`` covers; refused unless all are in the caller's communes."""
        sites = await self._sites()
        chosen = covered_sites(target, sites)
        ids = [s.gateway_id for s in chosen]
        if target.level is Level.CITY and not caller.in_scope("*"):
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                "target.city: the whole city needs every commune in your scope",
            )
        communes = {s.commune for s in chosen}
        outside = sorted(c for c in communes if not caller.in_scope(c))
        if outside:
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.PERMISSION_DENIED,
                f"target: covers gateways of {', '.join(outside)}, outside your communes",
            )
        if target.level is Level.LIST:
            known = {s.gateway_id for s in sites}
            missing = [g for g in target.gateway_ids if g not in known]
            if missing:
                await self.gate.refuse(
                    context,
                    caller,
                    attempt,
                    grpc.StatusCode.NOT_FOUND,
                    f"target.list.gateway_ids: no gateway {missing[0]!r}",
                )
        return ids

    async def _target(
        self, context: Context, caller: Caller, attempt: Attempt | None, message: control_pb2.Target
    ) -> Target:
        try:
            return target_from_proto(message)
        except TargetError as exc:
            await self.gate.refuse(context, caller, attempt, INVALID, str(exc))

    def _group_message(self, group: GroupDocument, gateways: int = 0) -> control_pb2.GroupDocument:
        return control_pb2.GroupDocument(
            assignment_id=group.assignment_id,
            kind=group.kind,  # type: ignore[arg-type]
            target=target_to_proto(group.target),
            level=group.target.level.label,
            digest=group.digest,
            issued_at=timestamp(group.issued_at),
            issued_by=group.issued_by,
            gateways=gateways,
        )

    async def _group_kinds(self) -> list[int]:
        groups = await self.runner.read(group_sql.group_documents_of)
        return sorted({g.kind for g in groups})

    # -- asset register ------------------------------------------------------------------------

    async def ImportAssets(
        self, request_iterator: AsyncIterator[control_pb2.ImportAssetsRequest], context: Context
    ) -> control_pb2.ImportAssetsResponse:
        header: control_pb2.ImportAssetsRequest | None = None
        incoming: list[Asset] = []
        where: list[str] = []
        attempt = Attempt("assets.import", "register")
        caller = await self.gate.caller(context, VIEWER, None)
        async for request in request_iterator:
            if header is None:
                header = request
            for message in request.assets:
                place = f"assets[{len(incoming)}]"
                try:
                    incoming.append(asset_from_proto(message, place))
                except InventoryError as exc:
                    await self.gate.refuse(context, caller, None, INVALID, str(exc))
                where.append(place)
        if header is None:
            await context.abort(INVALID, "request: send a header and the assets")
            raise AssertionError("unreachable")
        if not header.dry_run:
            caller = await self.gate.caller(context, ADMIN, attempt)
        kinds = await self._group_kinds()
        now = self.clock.now()

        def run(c: Any) -> Any:
            return import_assets(
                c,
                incoming,
                where,
                dry_run=header.dry_run,
                expected_digest=header.expected_digest,
                kinds=kinds,
                now=now,
            )

        try:
            outcome = await (self.runner.read(run) if header.dry_run else self.runner.write(run))
        except StaleRegister as exc:
            await self.gate.refuse(
                context,
                caller,
                attempt if not header.dry_run else None,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(exc),
            )
        except (FieldError, GroupConflict) as exc:
            await self.gate.refuse(
                context, caller, attempt if not header.dry_run else None, INVALID, str(exc)
            )
        change = outcome.diff
        if outcome.applied:
            await self.gate.done(
                caller,
                attempt,
                f"added {len(change.added)}, changed {len(change.changed)}, "
                f"removed {len(change.removed)}",
            )
            await self.deliver.documents(outcome.written)

        def sample(items: Any) -> list[control_pb2.AssetChange]:
            return [
                control_pb2.AssetChange(kind=NUMBERS[a.kind], asset_id=a.asset_id, fields=list(f))
                for a, f in items[:SAMPLE]
            ]

        return control_pb2.ImportAssetsResponse(
            added=len(change.added),
            changed=len(change.changed),
            removed=len(change.removed),
            added_sample=sample([(a, ()) for a in change.added]),
            changed_sample=sample([(new, fields) for _, new, fields in change.changed]),
            removed_sample=sample([(a, ()) for a in change.removed]),
            register_digest=outcome.digest,
            applied=outcome.applied,
        )

    async def ListAssets(
        self, request: control_pb2.ListAssetsRequest, context: Context
    ) -> control_pb2.ListAssetsResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        kind = KINDS.get(request.kind)
        if request.kind and kind is None:
            await context.abort(INVALID, "kind: unknown asset kind")
        after: tuple[str, str] | None = None
        if request.page_token:
            k, sep, asset_id = request.page_token.partition("/")
            if not sep or k not in {a.value for a in AssetKind}:
                await context.abort(INVALID, "page_token: not a token this API gave")
            after = (k, asset_id)
        limit = min(request.page_size or 100, MAX_PAGE)
        scope = None if caller.in_scope("*") else list(caller.operator.communes)
        page = await self.runner.read(
            asset_sql.list_assets,
            kind=kind.value if kind else "",
            commune=request.commune,
            gateway_id=request.gateway_id,
            after=after,
            limit=limit,
            communes=scope,
        )
        token = f"{page[-1].kind.value}/{page[-1].asset_id}" if len(page) == limit else ""
        return control_pb2.ListAssetsResponse(
            assets=[asset_to_proto(a) for a in page], next_page_token=token
        )

    # -- group documents -----------------------------------------------------------------------

    async def PutGroupDocument(
        self, request: control_pb2.PutGroupDocumentRequest, context: Context
    ) -> control_pb2.PutGroupDocumentResponse:
        attempt = Attempt("group_document.put", _kind_name(request.kind))
        caller = await self.gate.caller(context, OPERATOR, attempt)
        target = await self._target(context, caller, attempt, request.target)
        attempt = Attempt(
            attempt.action,
            f"{target.describe()}/{_kind_name(request.kind)}",
            target.name if target.level is Level.COMMUNE else "",
        )
        ids = await self._in_scope(context, caller, attempt, target)
        try:
            # Signal plans are checked against each crossing's card by its agent, which
            # refuses a plan its card forbids: the refusal shows in the convergence view.
            document = check_document(request.kind, request.payload, [])
        except (FieldError, ValueError) as exc:
            await self.gate.refuse(context, caller, attempt, INVALID, str(exc))
        now = self.clock.now()

        def put(c: Any) -> tuple[GroupDocument, list[group_sql.Written]]:
            group = group_sql.put_group_document(
                c,
                kind=document.kind.number,
                target=target,
                digest=document.digest,
                payload=document.payload,
                issued_by=caller.actor,
                now=now,
            )
            return group, group_sql.reconcile(c, document.kind.number, now=now)

        group, written = await self._write_retrying(context, caller, attempt, put)
        await self.gate.done(caller, attempt, f"{len(written)} gateway(s) changed")
        await self.deliver.documents(written)
        winners = await self._winners(document.kind.number)
        return control_pb2.PutGroupDocumentResponse(
            document=self._group_message(group, winners.get(group.assignment_id, 0)),
            gateways_changed=len(written),
            gateways_covered=len(ids),
        )

    async def _write_retrying(
        self, context: Context, caller: Caller, attempt: Attempt, fn: Any
    ) -> Any:
        for _ in range(3):
            try:
                return await self.runner.write(fn)
            except GroupConflict:
                continue
        await self.gate.refuse(
            context,
            caller,
            attempt,
            grpc.StatusCode.ABORTED,
            "documents: changed concurrently three times, try again",
        )

    async def _winners(self, kind: int) -> dict[int, int]:
        # Counted by the store: every gateway's standing read into Python held the
        # interpreter for seconds at 10,000 gateways, while the put's documents went out.
        return await self.runner.read(group_sql.winners, kind)

    async def RemoveGroupDocument(
        self, request: control_pb2.RemoveGroupDocumentRequest, context: Context
    ) -> control_pb2.RemoveGroupDocumentResponse:
        attempt = Attempt("group_document.remove", _kind_name(request.kind))
        caller = await self.gate.caller(context, OPERATOR, attempt)
        target = await self._target(context, caller, attempt, request.target)
        attempt = Attempt(attempt.action, f"{target.describe()}/{_kind_name(request.kind)}")
        await self._in_scope(context, caller, attempt, target)
        now = self.clock.now()

        def remove(c: Any) -> list[group_sql.Written] | None:
            if not group_sql.remove_group_document(c, request.kind, target):
                return None
            # Gateways it reached get the next assignment covering them; with none left,
            # they keep the document they hold (a lamp is never left without a program).
            return group_sql.reconcile(c, request.kind, now=now)

        written = await self._write_retrying(context, caller, attempt, remove)
        if written is None:
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.NOT_FOUND,
                "target: no document of that kind is assigned there",
            )
        await self.gate.done(caller, attempt, f"{len(written)} gateway(s) changed")
        await self.deliver.documents(written)
        return control_pb2.RemoveGroupDocumentResponse(gateways_changed=len(written))

    async def ListGroupDocuments(
        self, request: control_pb2.ListGroupDocumentsRequest, context: Context
    ) -> control_pb2.ListGroupDocumentsResponse:
        await self.gate.caller(context, VIEWER, None)
        groups = await self.runner.read(group_sql.group_documents_of, request.kind)
        counts: dict[int, int] = {}
        for kind in {g.kind for g in groups}:
            counts.update(await self._winners(kind))
        return control_pb2.ListGroupDocumentsResponse(
            documents=[self._group_message(g, counts.get(g.assignment_id, 0)) for g in groups]
        )

    async def GetEffectiveDocument(
        self, request: control_pb2.GetEffectiveDocumentRequest, context: Context
    ) -> control_pb2.GetEffectiveDocumentResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        gateway = await self.gate.gateway(context, caller, request.gateway_id, None)
        store = self.runner.store

        def load(c: Any) -> Any:
            return (
                store.get_document(c, gateway.gateway_id, request.kind),
                group_sql.source_of(c, gateway.gateway_id, request.kind),
                group_sql.group_documents_of(c, request.kind),
                {h.kind: h for h in store.held_for(c, gateway.gateway_id)}.get(request.kind),
            )

        if request.kind not in link_pb2.DocumentKind.values() or request.kind == 0:
            await context.abort(INVALID, "kind: unknown document kind")
        document, source, groups, held = await self.runner.read(load)
        site = Site(
            gateway.gateway_id,
            gateway.commune,
            frozenset(gateway.tags),
            gateway.latitude,
            gateway.longitude,
        )
        by_id = {g.assignment_id: g for g in groups}
        covering = [
            by_id[a.assignment_id] for a in candidates(site, [g.assignment for g in groups])
        ]
        response = control_pb2.GetEffectiveDocumentResponse()
        if document is None:
            response.shadowed.extend(self._group_message(g) for g in covering)
            return response
        response.document.CopyFrom(document_message(document))
        if held is not None:
            response.held.CopyFrom(
                link_pb2.HeldDocument(kind=held.kind, version=held.version, digest=held.digest)
            )
        if source is not None and source[1] == document.version and source[0] in by_id:
            origin = by_id[source[0]]
            response.source = origin.target.level.label
            response.from_group.CopyFrom(self._group_message(origin))
            shadowed = [g for g in covering if g.assignment_id != origin.assignment_id]
        else:
            response.source = "gateway"
            shadowed = covering
        response.shadowed.extend(self._group_message(g) for g in shadowed)
        return response

    async def ReleaseGatewayDocument(
        self, request: control_pb2.ReleaseGatewayDocumentRequest, context: Context
    ) -> control_pb2.ReleaseGatewayDocumentResponse:
        attempt = Attempt(
            "group_document.release", f"{request.gateway_id}/{_kind_name(request.kind)}"
        )
        caller = await self.gate.caller(context, OPERATOR, attempt)
        gateway = await self.gate.gateway(context, caller, request.gateway_id, attempt)
        attempt = Attempt(attempt.action, attempt.target, gateway.commune)
        now = self.clock.now()
        store = self.runner.store

        def release(c: Any) -> Any:
            group_sql.release_pin(c, gateway.gateway_id, request.kind)
            written = group_sql.reconcile(c, request.kind, now=now, only=[gateway.gateway_id])
            return written, store.get_document(c, gateway.gateway_id, request.kind)

        written, document = await self._write_retrying(context, caller, attempt, release)
        if not written:
            await self.gate.refuse(
                context,
                caller,
                attempt,
                grpc.StatusCode.FAILED_PRECONDITION,
                "kind: no group document covers this gateway; it keeps its own",
            )
        await self.gate.done(caller, attempt, f"version {document.version}")
        await self.deliver.documents(written)
        return control_pb2.ReleaseGatewayDocumentResponse(document=document_message(document))

    # -- convergence ---------------------------------------------------------------------------

    async def GetConvergence(
        self, request: control_pb2.GetConvergenceRequest, context: Context
    ) -> control_pb2.GetConvergenceResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        if request.kind not in link_pb2.DocumentKind.values() or request.kind == 0:
            await context.abort(INVALID, "kind: unknown document kind")
        wanted: set[str] | None = None
        if request.HasField("target"):
            target = await self._target(context, caller, None, request.target)
            wanted = set(covered(target, await self._sites()))
        store, since = self.runner.store, self.router.live_since()

        def load(c: Any) -> Any:
            return group_sql.standings(c, request.kind), store.live_streams(c, seen_since=since)

        standings, live = await self.runner.read(load)
        mine = [
            s
            for s in standings
            if caller.in_scope(s.commune) and (wanted is None or s.gateway_id in wanted)
        ]
        result = converge(mine, set(live), max_lagging=min(request.max_lagging or 100, MAX_PAGE))
        response = control_pb2.GetConvergenceResponse(
            gateways=result.gateways,
            converged=result.converged,
            lagging_total=sum(result.counts.values()),
            offline=result.counts.get("offline", 0) + result.counts.get("never-connected", 0),
            refused=result.counts.get("refused", 0),
            pending=result.counts.get("pending", 0),
            without_document=result.without_document,
        )
        for lag in result.lagging:
            s = lag.standing
            item = control_pb2.LaggingGateway(
                gateway_id=s.gateway_id,
                commune=s.commune,
                desired_version=s.desired_version,
                held_version=s.held_version,
                reason=lag.reason,
                refusal=s.refusal if lag.reason == "refused" else "",
            )
            if lag.offline_since is not None and lag.reason == "offline":
                item.offline_since.CopyFrom(timestamp(lag.offline_since))
            response.lagging.append(item)
        return response

    # -- commands ------------------------------------------------------------------------------

    async def SendGroupCommand(
        self, request: control_pb2.SendGroupCommandRequest, context: Context
    ) -> control_pb2.SendGroupCommandResponse:
        batch = uuid.uuid4().hex[:16]
        attempt = Attempt("group_command.send", batch)
        caller = await self.gate.caller(context, OPERATOR, attempt)
        target = await self._target(context, caller, attempt, request.target)
        attempt = Attempt(
            attempt.action,
            f"{target.describe()}/{batch}",
            target.name if target.level is Level.COMMUNE else "",
        )
        now = self.clock.now()
        template = link_pb2.Command()
        template.CopyFrom(request.command)
        template.command_id = batch
        problem = check_command(template, now)
        if problem:
            await self.gate.refuse(context, caller, attempt, INVALID, problem)
        ids = await self._in_scope(context, caller, attempt, target)
        if not ids:
            await self.gate.refuse(
                context, caller, attempt, grpc.StatusCode.NOT_FOUND, "target: covers no gateway"
            )
        expires = template.expires_at.ToDatetime(tzinfo=now.tzinfo)
        records = []
        for n, gateway_id in enumerate(ids):
            command = link_pb2.Command()
            command.CopyFrom(template)
            command.command_id = f"{batch}-{n:05d}"
            records.append(
                CommandRecord(
                    command.command_id,
                    gateway_id,
                    command.SerializeToString(),
                    expires,
                    link_pb2.COMMAND_STATUS_PENDING,
                    "",
                    now,
                    caller.actor,
                )
            )
        rows = [
            {
                "command_id": r.command_id,
                "gateway_id": r.gateway_id,
                "payload": r.payload,
                "expires_at": r.expires_at,
                "status": r.status,
                "created_at": now,
                "created_by": r.created_by,
            }
            for r in records
        ]
        await self.runner.write(group_sql.add_commands, rows)
        await self.gate.done(
            caller, attempt, f"{template.WhichOneof('action')} to {len(ids)} gateway(s)"
        )
        await self.deliver.commands(records)
        return control_pb2.SendGroupCommandResponse(batch_id=batch, gateways=len(ids))

    async def GetGroupCommand(
        self, request: control_pb2.GetGroupCommandRequest, context: Context
    ) -> control_pb2.GetGroupCommandResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        if len(request.batch_id) != 16 or not all(
            c in "0123456789abcdef" for c in request.batch_id
        ):
            await context.abort(INVALID, "batch_id: 16 hexadecimal digits")
        statuses = await self.runner.read(group_sql.batch_statuses, request.batch_id)
        visible = await self.gate.visible_gateways(caller)
        mine = [s for s in statuses if s[0] in visible]
        if not mine:
            await context.abort(grpc.StatusCode.NOT_FOUND, "batch_id: no such batch")
        response = control_pb2.GetGroupCommandResponse(gateways=len(mine))
        for gateway_id, status, _detail in mine:
            name = link_pb2.CommandStatus.Name(status).removeprefix("COMMAND_STATUS_")  # type: ignore[arg-type]
            name = name.lower()
            response.by_status[name] = response.by_status[name] + 1
            if status in (link_pb2.COMMAND_STATUS_REFUSED, link_pb2.COMMAND_STATUS_EXPIRED):
                response.failed.append(gateway_id)
        return response

    # -- the fleet -----------------------------------------------------------------------------

    async def ListFleet(
        self, request: control_pb2.ListFleetRequest, context: Context
    ) -> control_pb2.ListFleetResponse:
        caller = await self.gate.caller(context, VIEWER, None)
        if len(request.commune) > 128 or len(request.page_token) > 64:
            await context.abort(INVALID, "commune, page_token: too long")
        limit = min(request.page_size or 100, MAX_PAGE)
        scope = None if caller.in_scope("*") else list(caller.operator.communes)
        store, since = self.runner.store, self.router.live_since()

        def load(c: Any) -> Any:
            page = group_sql.fleet_page(
                c, after=request.page_token, limit=limit, commune=request.commune, communes=scope
            )
            live = store.live_streams(c, seen_since=since) if page else {}
            return page, live

        page, live = await self.runner.read(load)
        response = control_pb2.ListFleetResponse(
            next_page_token=page[-1].gateway_id if len(page) == limit else ""
        )
        for row in page:
            item = control_pb2.FleetGateway(
                gateway_id=row.gateway_id,
                commune=row.commune,
                tags=list(row.tags),
                connected=row.gateway_id in live,
                firmware_version=row.firmware_version,
                enrolled=row.enrolled,
                documents=row.documents,
                documents_held=row.documents_held,
            )
            if row.last_seen is not None:
                item.last_seen.CopyFrom(timestamp(row.last_seen))
            response.gateways.append(item)
        return response

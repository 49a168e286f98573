"""ControlCentre: the admin API the CLI and the dashboard use.

Callers are operators, identified by their client certificate; their role (viewer,
operator, admin) and scope of communes come from the store at every call
(:mod:`orchestrator.access.gate`). Every write lands in the audit log with who, what, where,
when and the result, refused attempts included. Every field of a request is checked, and
a refusal names the field and changes nothing.

This servicer only routes each call to the part of the API that answers it, one module
per subsystem: :mod:`orchestrator.api.fleet` (gateways, devices),
:mod:`orchestrator.api.documents` (desired state), :mod:`orchestrator.api.commands`,
:mod:`orchestrator.api.feed` (events) and :mod:`orchestrator.identity.admin` (revocation,
enrollment tokens, the audit log).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from orchestrator.api.commands import CommandsApi
from orchestrator.api.documents import DocumentsApi
from orchestrator.api.feed import EventFeed
from orchestrator.api.fleet import FleetApi
from orchestrator.identity.admin import IdentityAdmin
from protos.ondijon.v1 import control_pb2, control_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ControlCentreService(control_pb2_grpc.ControlCentreServicer):
    def __init__(
        self,
        *,
        fleet: FleetApi,
        documents: DocumentsApi,
        commands: CommandsApi,
        feed: EventFeed,
        identities: IdentityAdmin,
    ) -> None:
        self.fleet = fleet
        self.documents = documents
        self.commands = commands
        self.feed = feed
        self.identities = identities

    async def AddGateway(
        self, request: control_pb2.AddGatewayRequest, context: Context
    ) -> control_pb2.AddGatewayResponse:
        return await self.fleet.AddGateway(request, context)

    async def ListGateways(
        self, request: control_pb2.ListGatewaysRequest, context: Context
    ) -> control_pb2.ListGatewaysResponse:
        return await self.fleet.ListGateways(request, context)

    async def GetGateway(
        self, request: control_pb2.GetGatewayRequest, context: Context
    ) -> control_pb2.GetGatewayResponse:
        return await self.fleet.GetGateway(request, context)

    async def ListDevices(
        self, request: control_pb2.ListDevicesRequest, context: Context
    ) -> control_pb2.ListDevicesResponse:
        return await self.fleet.ListDevices(request, context)

    async def PutDesiredState(
        self, request: control_pb2.PutDesiredStateRequest, context: Context
    ) -> control_pb2.PutDesiredStateResponse:
        return await self.documents.PutDesiredState(request, context)

    async def GetDesiredState(
        self, request: control_pb2.GetDesiredStateRequest, context: Context
    ) -> control_pb2.GetDesiredStateResponse:
        return await self.documents.GetDesiredState(request, context)

    async def SendCommand(
        self, request: control_pb2.SendCommandRequest, context: Context
    ) -> control_pb2.SendCommandResponse:
        return await self.commands.SendCommand(request, context)

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse:
        return await self.commands.GetCommand(request, context)

    async def ListOverrides(
        self, request: control_pb2.ListOverridesRequest, context: Context
    ) -> control_pb2.ListOverridesResponse:
        return await self.commands.ListOverrides(request, context)

    async def ListEvents(
        self, request: control_pb2.ListEventsRequest, context: Context
    ) -> control_pb2.ListEventsResponse:
        return await self.feed.ListEvents(request, context)

    async def RevokeGateway(
        self, request: control_pb2.RevokeGatewayRequest, context: Context
    ) -> control_pb2.RevokeGatewayResponse:
        return await self.identities.revoke_gateway(request, context)

    async def IssueEnrollmentToken(
        self, request: control_pb2.IssueEnrollmentTokenRequest, context: Context
    ) -> control_pb2.IssueEnrollmentTokenResponse:
        return await self.identities.issue_token(request, context)

    async def ListAudit(
        self, request: control_pb2.ListAuditRequest, context: Context
    ) -> control_pb2.ListAuditResponse:
        return await self.identities.list_audit(request, context)

    async def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchEventsResponse]:
        # Closed here, not when collected: the feed's watcher must go when the call ends.
        async with contextlib.aclosing(self.feed.WatchEvents(request, context)) as responses:
            async for response in responses:
                yield response

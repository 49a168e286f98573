"""What the console calls: the admin API's own service objects, described by the methods
it uses (the console sits beside :mod:`orchestrator.api`, never on it; the composition
root hands it the objects the gRPC server serves)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from orchestrator.access.gate import Gatekeeper
from protos.ondijon.v1 import control_pb2, firmware_pb2

Context = grpc.aio.ServicerContext[Any, Any]


class ControlCalls(Protocol):
    """The ControlCentre service (:class:`orchestrator.api.control.ControlCentreService`)."""

    async def ListGateways(
        self, request: control_pb2.ListGatewaysRequest, context: Context
    ) -> control_pb2.ListGatewaysResponse: ...

    async def GetGateway(
        self, request: control_pb2.GetGatewayRequest, context: Context
    ) -> control_pb2.GetGatewayResponse: ...

    async def ListDevices(
        self, request: control_pb2.ListDevicesRequest, context: Context
    ) -> control_pb2.ListDevicesResponse: ...

    async def SendCommand(
        self, request: control_pb2.SendCommandRequest, context: Context
    ) -> control_pb2.SendCommandResponse: ...

    async def GetCommand(
        self, request: control_pb2.GetCommandRequest, context: Context
    ) -> control_pb2.GetCommandResponse: ...

    async def ListEvents(
        self, request: control_pb2.ListEventsRequest, context: Context
    ) -> control_pb2.ListEventsResponse: ...

    def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchEventsResponse]: ...


class CampaignCalls(Protocol):
    """The Campaigns service (:class:`orchestrator.api.campaigns.CampaignsService`)."""

    async def ListCampaigns(
        self, request: firmware_pb2.ListCampaignsRequest, context: Context
    ) -> firmware_pb2.ListCampaignsResponse: ...

    async def PauseCampaign(
        self, request: firmware_pb2.PauseCampaignRequest, context: Context
    ) -> firmware_pb2.PauseCampaignResponse: ...

    async def ResumeCampaign(
        self, request: firmware_pb2.ResumeCampaignRequest, context: Context
    ) -> firmware_pb2.ResumeCampaignResponse: ...

    async def AbortCampaign(
        self, request: firmware_pb2.AbortCampaignRequest, context: Context
    ) -> firmware_pb2.AbortCampaignResponse: ...


@dataclass(frozen=True)
class Services:
    """The service objects the console calls, and the gate that says who may do what."""

    control: ControlCalls
    campaigns: CampaignCalls
    gate: Gatekeeper

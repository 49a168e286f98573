"""What the console calls: the admin API's own service objects, described by the methods
it uses (the console sits beside :mod:`orchestrator.api`, never on it; the composition
root hands it the objects the gRPC server serves)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from aiohttp import web

from foundation.clock import Clock
from orchestrator.access.gate import Caller, Gatekeeper
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

    async def GetDesiredState(
        self, request: control_pb2.GetDesiredStateRequest, context: Context
    ) -> control_pb2.GetDesiredStateResponse: ...

    async def PutDesiredState(
        self, request: control_pb2.PutDesiredStateRequest, context: Context
    ) -> control_pb2.PutDesiredStateResponse: ...

    async def ListAudit(
        self, request: control_pb2.ListAuditRequest, context: Context
    ) -> control_pb2.ListAuditResponse: ...

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


class OperationCalls(Protocol):
    """The Operations service (:class:`orchestrator.api.operations.OperationsService`)."""

    async def ListAlarms(
        self, request: control_pb2.ListAlarmsRequest, context: Context
    ) -> control_pb2.ListAlarmsResponse: ...

    def WatchAlarms(
        self, request: control_pb2.WatchAlarmsRequest, context: Context
    ) -> AsyncIterator[control_pb2.WatchAlarmsResponse]: ...

    async def AcknowledgeAlarm(
        self, request: control_pb2.AcknowledgeAlarmRequest, context: Context
    ) -> control_pb2.AcknowledgeAlarmResponse: ...

    async def ShelveAlarm(
        self, request: control_pb2.ShelveAlarmRequest, context: Context
    ) -> control_pb2.ShelveAlarmResponse: ...

    async def AssignAlarm(
        self, request: control_pb2.AssignAlarmRequest, context: Context
    ) -> control_pb2.AssignAlarmResponse: ...

    async def CloseAlarm(
        self, request: control_pb2.CloseAlarmRequest, context: Context
    ) -> control_pb2.CloseAlarmResponse: ...

    async def EnergyReport(
        self, request: control_pb2.EnergyReportRequest, context: Context
    ) -> control_pb2.EnergyReportResponse: ...

    async def ListPlaybooks(
        self, request: control_pb2.ListPlaybooksRequest, context: Context
    ) -> control_pb2.ListPlaybooksResponse: ...

    async def ListPlaybookRuns(
        self, request: control_pb2.ListPlaybookRunsRequest, context: Context
    ) -> control_pb2.ListPlaybookRunsResponse: ...

    async def StartPlaybook(
        self, request: control_pb2.StartPlaybookRequest, context: Context
    ) -> control_pb2.StartPlaybookResponse: ...

    async def ConfirmPlaybook(
        self, request: control_pb2.ConfirmPlaybookRequest, context: Context
    ) -> control_pb2.ConfirmPlaybookResponse: ...

    async def EndPlaybook(
        self, request: control_pb2.EndPlaybookRequest, context: Context
    ) -> control_pb2.EndPlaybookResponse: ...

    async def GetPlaybookRun(
        self, request: control_pb2.GetPlaybookRunRequest, context: Context
    ) -> control_pb2.GetPlaybookRunResponse: ...


class CityCalls(Protocol):
    """The City service (:class:`orchestrator.api.city.CityService`)."""

    async def ListAssets(
        self, request: control_pb2.ListAssetsRequest, context: Context
    ) -> control_pb2.ListAssetsResponse: ...

    async def ListFleet(
        self, request: control_pb2.ListFleetRequest, context: Context
    ) -> control_pb2.ListFleetResponse: ...

    async def PutGroupDocument(
        self, request: control_pb2.PutGroupDocumentRequest, context: Context
    ) -> control_pb2.PutGroupDocumentResponse: ...

    async def GetConvergence(
        self, request: control_pb2.GetConvergenceRequest, context: Context
    ) -> control_pb2.GetConvergenceResponse: ...


@dataclass(frozen=True)
class Services:
    """The service objects the console calls, and the gate that says who may do what."""

    control: ControlCalls
    campaigns: CampaignCalls
    operations: OperationCalls
    city: CityCalls
    gate: Gatekeeper


class Host(Protocol):
    """What a screen (alarms, energy, playbooks, convergence, the map) needs of the console
    (:class:`orchestrator.console.app.Console`): its services and clock, the signed-in
    operator's call context and role, its CSRF token, and the page around a body."""

    services: Services
    clock: Clock

    def lang(self, request: web.Request) -> str: ...

    def call(self, request: web.Request) -> Context: ...

    async def caller(self, request: web.Request) -> Caller: ...

    def csrf(self, request: web.Request) -> str: ...

    def may_write(self, caller: Caller) -> bool: ...

    def page(
        self,
        request: web.Request,
        title: str,
        body: str,
        *,
        status: int = 200,
        live: str = "",
    ) -> web.Response: ...

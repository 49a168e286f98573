"""One base for every "field: reason" error (foundation/errors.py): each subsystem's errors
are FieldErrors that print ``field: reason``, and a peer's answer keeps its status in front."""

from __future__ import annotations

import pytest

from domain.access import AccessListError
from domain.firmware.errors import FirmwareError
from domain.schedule.errors import ScheduleEngineError, ScheduleError
from domain.signals.plans import PlanStructureError, SignalPlanError
from edge.events import EquipmentConfigError, EquipmentError
from edge.identity import EnrollmentError, IdentityFilesError
from edge.storage.errors import StorageError
from foundation.errors import FieldError, split_field
from foundation.settings import ConfigError
from ondijon.audit import AuditExportError
from ondijon.client import AdminError
from orchestrator.access.admission import DeadlineError, RequestError
from orchestrator.access.limits import LimitError
from orchestrator.firmware.balena import BalenaError
from orchestrator.firmware.releases import UploadError
from orchestrator.firmware.rollout import CampaignError
from orchestrator.identity.operators import OperatorError
from orchestrator.ingest.checks import WireError
from orchestrator.store.database import Conflict, NotFound, StoreError
from provisioning.ca import CAError
from provisioning.identity import IdentityError
from provisioning.release import ReleaseError

EVERY = [
    AccessListError,
    AdminError,
    AuditExportError,
    BalenaError,
    CAError,
    CampaignError,
    ConfigError,
    Conflict,
    DeadlineError,
    EnrollmentError,
    EquipmentConfigError,
    FirmwareError,
    IdentityError,
    IdentityFilesError,
    LimitError,
    NotFound,
    OperatorError,
    PlanStructureError,
    ReleaseError,
    RequestError,
    ScheduleEngineError,
    ScheduleError,
    SignalPlanError,
    StorageError,
    StoreError,
    UploadError,
    WireError,
]


@pytest.mark.parametrize("cls", EVERY, ids=lambda c: c.__name__)
def test_every_field_error_prints_field_then_reason(cls: type[FieldError]) -> None:
    error = cls("lamps[3].pwm_pin", "pin 12 is already the relay of lamps[1]")
    assert isinstance(error, FieldError)
    assert (error.field, error.reason) == (
        "lamps[3].pwm_pin",
        "pin 12 is already the relay of lamps[1]",
    )
    assert str(error) == "lamps[3].pwm_pin: pin 12 is already the relay of lamps[1]"
    assert error.status is None


def test_the_bases_callers_catch_are_kept() -> None:
    # Callers catch ValueError for signal plans, EquipmentError for equipment tables.
    assert issubclass(SignalPlanError, ValueError)
    assert issubclass(EquipmentConfigError, EquipmentError)


@pytest.mark.parametrize("cls", [AdminError, EnrollmentError, AuditExportError])
def test_a_peers_answer_keeps_its_status_and_reads_the_field(cls: type[FieldError]) -> None:
    error = cls.answered("PERMISSION_DENIED", "token: already used")
    assert isinstance(error, cls) and isinstance(error, FieldError)
    assert str(error) == "PERMISSION_DENIED: token: already used"
    assert (error.status, error.field, error.reason) == (
        "PERMISSION_DENIED",
        "token",
        "already used",
    )


def test_an_answer_that_names_no_field_is_kept_whole() -> None:
    details = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: refused"
    error = AdminError.answered("UNAVAILABLE", details)
    assert str(error) == f"UNAVAILABLE: {details}"
    assert (error.field, error.reason) == ("", details)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway_id: no gateway 'x'", ("gateway_id", "no gateway 'x'")),
        ("lamps[3].pwm_pin: in use", ("lamps[3].pwm_pin", "in use")),
        ("--waves: '1,x' is not a list", ("--waves", "'1,x' is not a list")),
        (
            "manifest.parts[0].sha256: mismatch: again",
            ("manifest.parts[0].sha256", "mismatch: again"),
        ),
        ("internal error (error id 12ab)", ("", "internal error (error id 12ab)")),
        ("call closed: by peer", ("", "call closed: by peer")),
        ("", ("", "")),
    ],
)
def test_split_field(text: str, expected: tuple[str, str]) -> None:
    assert split_field(text) == expected

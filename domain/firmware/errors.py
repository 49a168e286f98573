"""Errors of the firmware subsystem: each names the field at fault and the reason.

``FirmwareRefused`` is what the agent reports as ``FIRMWARE_STAGE_REFUSED`` (an offer it will
not take: bad signature, expired, downgrade...), ``DownloadError`` what it reports while
downloading (retry later, the partial file is kept), ``SlotError`` a failure to install or
switch slots (the committed version keeps running), ``Cancelled`` an update stopped by the
orchestrator's cancel before the point of no return.
"""

from __future__ import annotations

from foundation.errors import FieldError


class FirmwareError(FieldError):
    """Base of firmware errors.

    Attributes:
        field: path of the offending field, e.g. ``manifest.parts[0].sha256``.
        reason: why it is refused, in words an operator understands.
    """


class FirmwareRefused(FirmwareError):
    """A release (or one of its parts) is not acceptable and must not be installed."""


class DownloadError(FirmwareError):
    """A download failed; what was durably written is kept so the next try resumes."""


class SlotError(FirmwareError):
    """A slot could not be installed, switched or committed."""


class Cancelled(FirmwareError):
    """The orchestrator cancelled the update before the point of no return (the switch)."""

"""A tiny sd_notify client: tell systemd the agent is ready, alive, and what it is doing.

The unit is ``Type=notify`` with ``WatchdogSec``: the agent sends ``READY=1`` once it runs,
``WATCHDOG=1`` at least every half watchdog interval (a hung agent is killed and restarted,
which counts a boot of a trial), and ``STATUS=`` lines shown by ``systemctl status``. The
protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket). Without that variable (not
under systemd, or in tests) every call does nothing. Failures are reported as ``False``,
never raised: a watchdog ping must not take the agent down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends notifications to systemd's socket (or nowhere when there is none)."""

    def __init__(self, socket_path: str | None = None) -> None:
        """Use ``socket_path``, or ``$NOTIFY_SOCKET`` when not given."""
        path = os.environ.get("NOTIFY_SOCKET") if socket_path is None else socket_path
        self._address: str | bytes | None = _address(path) if path else None

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere."""
        return self._address is not None

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` fields, e.g. ``notify(READY="1", STATUS="running")``.

        Returns:
            ``True`` if the datagram was sent, ``False`` if disabled or the send failed.
        """
        if self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            if "\n" in value:
                raise ValueError(f"{key}: a notification value must be one line")
            lines.append(f"{key}={value}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is done (``READY=1``)."""
        return self.notify(READY="1", **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        """Still alive (``WATCHDOG=1``)."""
        return self.notify(WATCHDOG="1")

    def status(self, text: str) -> bool:
        """One line for ``systemctl status``."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """Shutting down (``STOPPING=1``)."""
        return self.notify(STOPPING="1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or ``None`` when
    the watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec / 2_000_000


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path

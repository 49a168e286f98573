"""The real agent process for the bench: ``python -m ondijon.cli edge run --config FILE``.

The bench starts the agent exactly as a cabinet's service manager does, on the pin factory
under test (``GPIOZERO_PIN_FACTORY``), lets it run under a simulated clock from its TOML,
and stops it with SIGTERM. Its log goes to a file next to its state, shown when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class AgentProcess:
    """A running ``ondijon edge run``."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    log: Path

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Wait until the agent has opened its outbox (its clock runs from just before).

        Returns:
            ``time.monotonic()`` when it was seen ready.
        """
        deadline = time.monotonic() + timeout_s
        outbox = self.state_dir / "outbox.sqlite"
        while not outbox.exists():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the agent exited with {self.process.returncode}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not start in {timeout_s} s: {self.tail()}")
            time.sleep(0.02)  # polling for a file another process creates, not timing
        return time.monotonic()

    def keeps_running_for(self, seconds: float) -> None:
        """Assert the agent is still running ``seconds`` from now (it runs on its own)."""
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return
        raise AssertionError(f"the agent exited with {code}: {self.tail()}")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, as ``systemctl stop`` does; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the agent ignored SIGTERM: {self.tail()}") from None

    def tail(self, lines: int = 30) -> str:
        """The end of the agent's log."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn_agent(config: Path, state_dir: Path, *, pin_factory: str) -> AgentProcess:
    """Start ``ondijon edge run --config config`` on ``pin_factory``."""
    env = dict(
        os.environ,
        GPIOZERO_PIN_FACTORY=pin_factory,
        # A mock factory's pins must take a PWM duty cycle for the lamps' dimming lines.
        GPIOZERO_MOCK_PIN_CLASS="mockpwmpin",
        PYTHONUNBUFFERED="1",
    )
    log = state_dir.parent / "agent.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "ondijon.cli", "edge", "run", "--config", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return AgentProcess(process, state_dir, log)

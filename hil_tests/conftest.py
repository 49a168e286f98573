"""The bench for every hil_tests scenario: its inventory, its lock, its report.

- ``--bench PATH`` (or ``ONDIJON_BENCH``): the bench inventory; default examples/bench.toml.
  A wrong file stops the run before anything opens a pin, naming the key and the reason.
- On a hardware pin factory (``GPIOZERO_PIN_FACTORY`` other than ``mock``) the run takes
  the rig's lock file (``[bench] lock_file``) for its whole length, as gpiozero's real-pin
  tests do, so two runs never drive one rig; the lock is an advisory ``flock`` and dies
  with the process (no stale lock to delete).
- ``--bench-report DIR`` (or ``ONDIJON_BENCH_REPORT``): one record per scenario, written as
  ``DIR/report.json``, ``report.txt`` and ``report.html`` at the end of the run; with
  ``--junitxml`` each test case also carries its measurements (value, limits, pass) and
  faults as JUnit properties.
- ``ONDIJON_LONG=1`` (set by ``make hil``): the long forms of the scenarios (a whole night,
  a simulated day without link); ``make test`` runs the quick forms.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.bench.inventory import Inventory, load_inventory
from edge.bench.report import Record, Report
from edge.bench.rig import hold_lock
from foundation.settings import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bench.toml"
_RECORDS = pytest.StashKey[Record]()
_OUTCOME = pytest.StashKey[pytest.TestReport]()
_REPORT = pytest.StashKey[Report]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ondijon bench")
    group.addoption("--bench", default=None, help="bench inventory (TOML); env ONDIJON_BENCH")
    group.addoption(
        "--bench-report",
        default=None,
        help="write report.json/.txt/.html of the run here; env ONDIJON_BENCH_REPORT",
    )


def pin_factory_name() -> str:
    """The pin factory the run is for (``mock`` unless GPIOZERO_PIN_FACTORY names another)."""
    return os.environ.get("GPIOZERO_PIN_FACTORY", "mock").strip().lower() or "mock"


def inventory_path(config: pytest.Config) -> Path:
    given = config.getoption("--bench") or os.environ.get("ONDIJON_BENCH")
    return Path(given) if given else EXAMPLE


def pytest_configure(config: pytest.Config) -> None:
    path = inventory_path(config)
    report = Report(
        bench="",
        inventory=str(path),
        pin_factory=pin_factory_name(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    config.stash[_REPORT] = report


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> Inventory:
    """The bench inventory of this run."""
    path = inventory_path(pytestconfig)
    try:
        loaded = load_inventory(path)
    except ConfigError as exc:
        raise pytest.UsageError(f"bench inventory {path}: {exc}") from None
    pytestconfig.stash[_REPORT].bench = loaded.bench.name
    return loaded


@pytest.fixture(scope="session")
def inventory_file(pytestconfig: pytest.Config, inventory: Inventory) -> Path:
    """The file the run's inventory was read from (a rig process reads it too)."""
    return inventory_path(pytestconfig).resolve()


@pytest.fixture(scope="session")
def rig_lock(inventory: Inventory) -> Iterator[Path | None]:
    """Hold the rig for the whole run on real pins (nothing to hold on mock pins)."""
    if pin_factory_name() == "mock":
        yield None
        return
    with hold_lock(Path(inventory.bench.lock_file), inventory.bench.lock_wait_s) as path:
        yield path


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Record]:
    """This scenario's record in the run's report (its outcome set when it ends)."""
    doc = (request.function.__doc__ or "").strip().split("\n\n")[0]
    taken = Record(scenario=request.node.nodeid, description=" ".join(doc.split()))
    request.node.stash[_RECORDS] = taken
    yield taken


@pytest.fixture
def sim_bench(inventory: Inventory) -> Inventory:
    """The inventory, for a scenario that plays the street behind mock pins."""
    name = pin_factory_name()
    if name != "mock":
        pytest.skip(
            f"plays the street behind gpiozero's mock pins; on {name} the street is the real "
            "equipment: test_hil_wired.py reads it through the inventory's loop-back wires"
        )
    return inventory


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    taken = item.stash.get(_RECORDS, None)
    if taken is not None and call.when == "call":
        # JUnit XML (--junitxml) carries them as the test case's properties, for CI.
        item.user_properties += junit_properties(taken)
    report: pytest.TestReport = yield
    if taken is not None and (report.when == "call" or report.outcome != "passed"):
        if report.when == "call" or taken.outcome == "unknown":
            taken.outcome = report.outcome
        if report.failed:
            taken.error = str(report.longreprtext)[-2000:]
    return report  # type: ignore[return-value]


def pytest_runtest_teardown(item: pytest.Item) -> None:
    taken = item.stash.get(_RECORDS, None)
    if taken is not None:
        item.config.stash[_REPORT].records.append(taken)


def pytest_sessionfinish(session: pytest.Session) -> None:
    where = session.config.getoption("--bench-report") or os.environ.get("ONDIJON_BENCH_REPORT")
    report = session.config.stash.get(_REPORT, None)
    if not where or report is None or not report.records:
        return
    written = report.write(Path(where))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"bench report: {written} (and report.txt, report.html)")


def junit_properties(taken: Record) -> list[tuple[str, str]]:
    """A record's measurements and faults as JUnit test-case properties."""
    properties = [
        (
            f"measurement {m.name}",
            f"{m.value:g}{' ' + m.unit if m.unit else ''} [{m.limits()}] "
            f"{'pass' if m.passed else 'FAIL'}",
        )
        for m in taken.measurements
    ]
    properties += [(f"fault {f['fault']}", f"{f['target']} at {f['at']}") for f in taken.faults]
    return properties

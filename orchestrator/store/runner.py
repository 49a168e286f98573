"""Runs store operations off the event loop, with group commit for writes.

gRPC handlers ``await runner.write(fn)`` where ``fn(conn)`` does its part of a
transaction. One writer thread takes every write queued at that moment and runs them in
a single transaction (one fsync for many gateways); a job's future resolves only after the
commit, which is what lets the link acknowledge "stored". If the shared transaction fails,
each job is retried alone so one bad write cannot fail its neighbours (unless the failure
is the connection itself: then every job fails at once, none is retried into a dead link).

Writes an operator waits on (a command with its audit entry, a gateway's answer to a
command) go through :meth:`StoreRunner.write_first`: they are committed in a group of their
own, ahead of the writes queued before them, so an answer never waits behind a long queue
of ingestion. The two lanes take turns while both have work: a first group never runs twice
in a row while other writes wait, so no lane starves the other, and a first write waits at
most for the group in flight and one other.

Reads run on a small thread pool of their own and never wait behind the writer.

Every operation has a deadline (:class:`orchestrator.store.connection.StoreSettings`):
one that gets no answer in time is abandoned, its connection shut down under its thread,
and the caller gets :class:`StoreUnavailable`; so does one whose connection is lost. Each
such trouble sets :attr:`StoreRunner.troubled` (the replica's readiness,
:mod:`orchestrator.ingest.readiness`, waits on it, probes the store and decides) and is
passed to ``on_trouble``. While :attr:`available` is
false, operations fail at once instead of queueing behind a store known to be away.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from orchestrator.store.connection import StoreUnavailable, interrupt, is_disconnect
from orchestrator.store.database import Store

T = TypeVar("T")
P = ParamSpec("P")

log = logging.getLogger("ondijon.orchestrator.store")

Rows = list[tuple[Any, dict[str, Any]]]


class _InUse:
    """The database connection an operation's thread is using, to interrupt it."""

    def __init__(self) -> None:
        self.dbapi: Any = None
        self.interrupted = False
        self._lock = threading.Lock()

    def using(self, conn: sa.Connection) -> None:
        with self._lock:
            self.dbapi = conn.connection.dbapi_connection
            if self.interrupted:
                raise StoreUnavailable("store operation abandoned (past its deadline)")

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True
            if self.dbapi is not None:
                interrupt(self.dbapi)


@dataclass
class _Job:
    fn: Callable[[sa.Connection], Any] | None
    future: asyncio.Future[Any] = field(repr=False)
    rows: Rows = field(default_factory=list)

    def run(self, conn: sa.Connection) -> Any:
        if self.fn is not None:
            return self.fn(conn)
        for statement, params in self.rows:
            conn.execute(statement, params)
        return None


class StoreRunner:
    """Async access to a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 512,
        read_threads: int = 4,
        deadline_s: float | None = None,
        on_trouble: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.store = store
        self.deadline_s = deadline_s if deadline_s is not None else store.settings.deadline_s
        # Told how long each committed group took (seconds), from the writer thread: the
        # orchestrator's metrics (orchestrator.metrics) set it.
        self.on_commit: Callable[[float], None] | None = None
        self._max_batch = max_batch
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._readers = concurrent.futures.ThreadPoolExecutor(
            read_threads, thread_name_prefix="store-read"
        )
        self._prober = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-probe")
        self._first: collections.deque[_Job] = collections.deque()
        self._queued: collections.deque[_Job] = collections.deque()
        self._ready = asyncio.Event()
        self._first_ran = False  # the last group came from the first lane
        self._task: asyncio.Task[None] | None = None
        self._in_use: set[_InUse] = set()
        self.commits = 0
        # False while the store is known to be unreachable (set by the readiness probe).
        self.available = True
        self.on_trouble = on_trouble
        # Set at each trouble (with its reason), cleared by whoever handles it.
        self.troubled = asyncio.Event()
        self.trouble_reason = ""

    @property
    def waiting(self) -> tuple[int, int]:
        """Writes queued and not yet taken by the writer: (first lane, the others)."""
        return len(self._first), len(self._queued)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for in_use in list(self._in_use):
            in_use.interrupt()
        for pool in (self._writer, self._readers, self._prober):
            pool.shutdown(wait=True)

    # -- operations ------------------------------------------------------------------------

    async def read(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in a read-only transaction on a reader thread."""
        self._check_available()
        job = _bound(fn, args, kwargs)
        return await self._on_thread(self._readers, job, "read", self.deadline_s)

    async def write(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in the next group transaction; returns once
        committed."""
        self._check_available()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(self._queued, _Job(_bound(fn, args, kwargs), future))
        return await future

    async def write_first(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """As :meth:`write`, committed in a group of first writes only, ahead of the other
        writes queued: for what an operator is waiting on. Returns once committed."""
        self._check_available()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(self._first, _Job(_bound(fn, args, kwargs), future))
        return await future

    async def write_rows(self, rows: Rows) -> None:
        """Execute (statement, parameters) pairs in the next group transaction.

        Rows of every job in a group are executed with one ``executemany`` per statement:
        the hot path of ingestion costs one driver call per statement per commit, not one
        per gateway.
        """
        self._check_available()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(self._queued, _Job(None, future, rows))
        await future

    async def probe(self, timeout: float) -> bool:
        """Whether the store answers a trivial query within ``timeout`` seconds (run even
        while :attr:`available` is false: this is how the store is found back)."""
        try:
            await self._on_thread(
                self._prober, lambda c: c.execute(sa.text("SELECT 1")), "probe", timeout
            )
        except (StoreUnavailable, sa.exc.SQLAlchemyError, OSError):
            return False
        return True

    # -- deadlines -------------------------------------------------------------------------

    def _check_available(self) -> None:
        if not self.available:
            raise StoreUnavailable("the store is unreachable from this replica")

    def _trouble(self, reason: str) -> None:
        self.trouble_reason = reason
        self.troubled.set()
        try:
            self.on_trouble(reason)
        except Exception:
            log.exception("store trouble handler failed")

    async def _on_thread(
        self,
        pool: concurrent.futures.ThreadPoolExecutor,
        fn: Callable[[sa.Connection], T],
        what: str,
        deadline: float,
    ) -> T:
        in_use = _InUse()
        future = asyncio.get_running_loop().run_in_executor(pool, self._read_sync, fn, in_use)
        try:
            return await self._within(future, in_use, what, deadline)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if is_disconnect(exc):
                self._trouble(f"{what}: {exc.__class__.__name__}")
                raise StoreUnavailable(f"store connection lost ({exc.__class__.__name__})") from exc
            raise

    async def _within(
        self, future: asyncio.Future[T], in_use: _InUse, what: str, deadline: float
    ) -> T:
        self._in_use.add(in_use)
        try:
            # asyncio.timeout: wait_for (3.11) may swallow the caller's own cancellation.
            async with asyncio.timeout(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            # The thread is blocked on a socket whose peer says nothing: wake it.
            in_use.interrupt()
            future.add_done_callback(_consume)
            self._trouble(f"{what}: no answer in {deadline:g} s")
            raise StoreUnavailable(f"the store did not answer in {deadline:g} s") from None
        finally:
            self._in_use.discard(in_use)

    def _read_sync(self, fn: Callable[[sa.Connection], T], in_use: _InUse) -> T:
        with self.store.engine.connect() as conn:
            in_use.using(conn)
            return fn(conn)

    # -- the writer --------------------------------------------------------------------------

    def _put(self, lane: collections.deque[_Job], job: _Job) -> None:
        lane.append(job)
        self._ready.set()

    async def _next_group(self) -> list[_Job]:
        """The writes to commit together next: those of one lane, the first lane's unless
        it had the last turn and other writes wait."""
        while not (self._first or self._queued):
            self._ready.clear()
            await self._ready.wait()
        first = bool(self._first) and not (self._first_ran and self._queued)
        lane = self._first if first else self._queued
        self._first_ran = first
        jobs: list[_Job] = []
        while lane and len(jobs) < self._max_batch:
            jobs.append(lane.popleft())
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_group()
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            in_use = _InUse()
            future = loop.run_in_executor(self._writer, self._commit, jobs, in_use)
            try:
                outcomes = await self._within(future, in_use, "write", self.deadline_s)
            except StoreUnavailable as exc:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(StoreUnavailable(str(exc)))
                await self._writer_back(future)
                continue
            if outcomes and isinstance(outcomes[0][1], StoreUnavailable):
                self._trouble(f"write: {outcomes[0][1]}")
            for job, (ok, value) in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    async def _writer_back(self, future: asyncio.Future[Any]) -> None:
        """Wait for the interrupted writer thread to return before the next group; if it
        does not, leave it behind and write on a new thread."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.deadline_s):
                await asyncio.shield(future)
            return
        log.error("the store writer thread did not come back; starting another")
        self._writer.shutdown(wait=False)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-write")

    def _commit(self, jobs: list[_Job], in_use: _InUse) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        try:
            with self.store.engine.begin() as conn:
                in_use.using(conn)
                grouped: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
                for job in jobs:
                    for statement, params in job.rows:
                        grouped.setdefault(id(statement), (statement, []))[1].append(params)
                for statement, params_list in grouped.values():
                    conn.execute(statement, params_list)
                results = [(True, job.fn(conn) if job.fn else None) for job in jobs]
            self.commits += 1
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)
            return results
        except Exception as exc:
            if in_use.interrupted or is_disconnect(exc):
                # The connection, not a job: retrying each job alone would only wait for
                # the dead store once per job.
                lost = StoreUnavailable(f"store connection lost ({exc.__class__.__name__})")
                return [(False, lost) for _ in jobs]
            if len(jobs) == 1:
                return [self._commit_one(jobs[0], in_use)]
        return [self._commit_one(job, in_use) for job in jobs]

    def _commit_one(self, job: _Job, in_use: _InUse) -> tuple[bool, Any]:
        try:
            with self.store.engine.begin() as conn:
                in_use.using(conn)
                value = job.run(conn)
            self.commits += 1
            return True, value
        except Exception as exc:
            return False, exc


def _bound(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[sa.Connection], T]:
    """``fn`` with its arguments after the connection (``fn`` itself when there are none)."""
    if not args and not kwargs:
        return fn
    return functools.partial(_call, fn, args, kwargs)


def _call(
    fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], conn: sa.Connection
) -> T:
    return fn(conn, *args, **kwargs)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned operation's outcome (asyncio would log it as never retrieved)."""
    if not future.cancelled():
        future.exception()

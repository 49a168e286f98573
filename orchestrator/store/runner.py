"""Runs store operations off the event loop, with group commit for writes.

gRPC handlers ``await runner.write(fn)`` where ``fn(conn)`` does its part of a
transaction. One writer thread takes every write queued at that moment and runs them in
a single transaction (one fsync for many gateways); a job's future resolves only after the
commit, which is what lets the link acknowledge "stored". If the shared transaction fails,
each job is retried alone so one bad write cannot fail its neighbours.

Reads run on a small thread pool of their own and never wait behind the writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from orchestrator.store.store import Store

T = TypeVar("T")


Rows = list[tuple[Any, dict[str, Any]]]


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

    def __init__(self, store: Store, *, max_batch: int = 512, read_threads: int = 4) -> None:
        self.store = store
        self._max_batch = max_batch
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._readers = concurrent.futures.ThreadPoolExecutor(
            read_threads, thread_name_prefix="store-read"
        )
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` in a read-only transaction on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_sync, fn)

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` in the next group transaction; returns once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(fn, future))
        return await future

    async def write_rows(self, rows: Rows) -> None:
        """Execute (statement, parameters) pairs in the next group transaction.

        Rows of every job in a group are executed with one ``executemany`` per statement:
        the hot path of ingestion costs one driver call per statement per commit, not one
        per gateway.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(None, future, rows))
        await future

    def _read_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        with self.store.engine.connect() as conn:
            return fn(conn)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self._max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            outcomes = await loop.run_in_executor(self._writer, self._commit, jobs)
            for job, (ok, value) in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _commit(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        try:
            with self.store.engine.begin() as conn:
                grouped: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
                for job in jobs:
                    for statement, params in job.rows:
                        grouped.setdefault(id(statement), (statement, []))[1].append(params)
                for statement, params_list in grouped.values():
                    conn.execute(statement, params_list)
                results = [(True, job.fn(conn) if job.fn else None) for job in jobs]
            self.commits += 1
            return results
        except Exception:
            if len(jobs) == 1:
                return [self._commit_one(jobs[0])]
        return [self._commit_one(job) for job in jobs]

    def _commit_one(self, job: _Job) -> tuple[bool, Any]:
        try:
            with self.store.engine.begin() as conn:
                value = job.run(conn)
            self.commits += 1
            return True, value
        except Exception as exc:
            return False, exc

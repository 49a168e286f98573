"""Admission: what every RPC of both ports goes through before a service sees it.

A gRPC server interceptor that wraps every method handler:

- **strict decoding**: the request bytes are decoded here, and bytes that are not a valid
  message of the method's type are answered INVALID_ARGUMENT naming ``request``. (gRPC's
  own decoding answers UNKNOWN and logs a traceback per message, which lets any peer fill
  the logs.)
- **budgets** from :class:`orchestrator.limits.RateLimits`, keyed by the caller's identity
  (its certificate URI) or, without a client certificate, by its address: unary calls per
  second, concurrent streams, new streams per second, and messages and bytes per second on
  a GatewayLink stream. Over budget is RESOURCE_EXHAUSTED; a link stream over budget is
  closed.
- **the store away**: a call that could not reach the store is answered UNAVAILABLE (the
  replica is not ready, :mod:`orchestrator.readiness`), so a client tries another replica.
- **no leaked internals**: an exception a service did not turn into a status is logged
  with an error id and answered INTERNAL with that id only (gRPC would send the exception
  text, SQL and all, to the caller).

Authorisation stays with each service (it needs the store); admission only counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from orchestrator.app import Orchestrator
from orchestrator.auth import AuthError, peer_of
from orchestrator.limits import BucketMap, LimitError, RateLimits, StreamCounts, StreamMeter
from orchestrator.store.connection import StoreUnavailable
from orchestrator.wire import WireError
from provisioning.identity import Role

log = logging.getLogger("ondijon.orchestrator.admission")

Context = grpc.aio.ServicerContext[Any, Any]
Decoder = Callable[[bytes], Any]

# Streams whose every message is metered against the link budgets.
METERED_STREAMS = frozenset({"/ondijon.v1.GatewayLink/Connect"})


def caller_of(context: Context) -> tuple[str, str, str]:
    """The budget key of a call (identity URI, else client address), the caller's role and
    its certificate serial ("" without one)."""
    try:
        peer = peer_of(context)
    except AuthError:
        return address_of(context.peer()), "", ""
    return peer.identity.uri, peer.identity.role.value, peer.serial_hex


def address_of(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``: budgets are per host, not per port."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class Admission(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Decodes, counts and guards every call; see the module docstring."""

    def __init__(
        self, app: Orchestrator, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.monotonic = monotonic
        self.streams = StreamCounts()
        self._rates: RateLimits | None = None
        self._calls = self._opens = self._log_budget = BucketMap(0, 0, 0)
        self.refusals = 0

    def _budgets(self) -> RateLimits:
        # The limits can be replaced on the running app (tests, a reload): follow them.
        rates = self.app.rates
        if rates is not self._rates:
            self._rates = rates
            self._calls = BucketMap(rates.calls_per_s, rates.call_burst, rates.tracked_peers)
            self._opens = BucketMap(
                rates.stream_opens_per_s, rates.stream_open_burst, rates.tracked_peers
            )
            self._log_budget = BucketMap(1 / 60, 3, 10_000)
        return rates

    async def _refuse(self, context: Context, key: str, method: str, exc: LimitError) -> None:
        self.refusals += 1
        if self._log_budget.take(key, 1, self.monotonic()):
            log.warning("refused %s from %s: %s", method, key, exc)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        decode: Decoder = handler.request_deserializer or (lambda raw: raw)
        serialize = handler.response_serializer
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(method, decode, handler.unary_unary), None, serialize
            )
        if not handler.request_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(method, decode, handler.unary_stream), None, serialize
            )
        if not handler.response_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(method, decode, handler.stream_unary), None, serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream_stream(method, decode, handler.stream_stream), None, serialize
        )

    # -- budgets ---------------------------------------------------------------------------

    def _take_call(self, key: str) -> None:
        rates = self._budgets()
        if not self._calls.take(key, 1, self.monotonic()):
            raise LimitError(
                "calls", f"more than {rates.calls_per_s:g} calls/s (burst {rates.call_burst:g})"
            )

    @staticmethod
    def stream_key(key: str, method: str) -> str:
        """Streams are capped per identity and method: a gateway's link stream and its
        firmware download do not compete for one cap."""
        return f"{key} {method}"

    def _open_stream(self, key: str, role: str, method: str) -> None:
        rates = self._budgets()
        if not self._opens.take(key, 1, self.monotonic()):
            raise LimitError(
                "streams",
                f"more than {rates.stream_opens_per_s:g} new streams/s "
                f"(burst {rates.stream_open_burst:g}); reconnect later",
            )
        cap = rates.streams_per_gateway if role == Role.GATEWAY.value else rates.streams_per_peer
        self.streams.open(self.stream_key(key, method), cap)

    # -- decoding and errors ------------------------------------------------------------------

    @staticmethod
    def _decode_one(decode: Decoder, raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:
            raise WireError("request", f"not a valid message of this method ({exc})") from None

    async def _decoded(
        self, raw_requests: AsyncIterator[bytes], decode: Decoder, meter: StreamMeter | None
    ) -> AsyncIterator[Any]:
        async for raw in raw_requests:
            if meter is not None:
                meter.admit(len(raw), self.monotonic())
            yield self._decode_one(decode, raw)

    async def _fail(self, context: Context, key: str, method: str, exc: Exception) -> None:
        """Answer an exception with a proper status; re-raise what gRPC must see."""
        if isinstance(exc, LimitError):
            await self._refuse(context, key, method, exc)
        if isinstance(exc, WireError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, StoreUnavailable):
            # Not this call's fault: the replica cannot reach its store (readiness).
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, grpc.aio.BaseError) or context.done():
            # gRPC's own (an abort, a peer gone mid-send, a server stopping): gRPC knows
            # what to do with them, and the call may be over already.
            raise exc
        error_id = uuid.uuid4().hex[:12]
        log.error("unhandled error in %s (error id %s)", method, error_id, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})")

    async def _closed_here(self, context: Context, serial: str) -> None:
        """A stream whose handler this process cancelled (revocation, renewal, a newer
        stream) ends with the status the hub left for it; gRPC would send none and leave
        the peer waiting."""
        if context.cancelled() or context.done():
            return  # the peer left, or the server is stopping: nothing to tell
        code, reason = self.app.hub.closing.pop(
            serial, (grpc.StatusCode.CANCELLED, "stream closed by the orchestrator")
        )
        with contextlib.suppress(grpc.aio.UsageError, grpc.aio.InternalError):
            await context.abort(code, reason)

    # -- the four shapes of RPC -----------------------------------------------------------------

    def _unary_unary(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(raw: bytes, context: Context) -> Any:
            key, _, _ = caller_of(context)
            try:
                self._take_call(key)
                return await inner(self._decode_one(decode, raw), context)
            except Exception as exc:
                await self._fail(context, key, method, exc)

        return behaviour

    def _unary_stream(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(raw: bytes, context: Context) -> AsyncIterator[Any]:
            key, role, serial = caller_of(context)
            opened = False
            try:
                self._take_call(key)
                self._open_stream(key, role, method)
                opened = True
                result = inner(self._decode_one(decode, raw), context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:
                    await result
            except asyncio.CancelledError:
                await self._closed_here(context, serial)
                raise
            except Exception as exc:
                await self._fail(context, key, method, exc)
            finally:
                if opened:
                    self.streams.close(self.stream_key(key, method))

        return behaviour

    def _stream_unary(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(raw_requests: AsyncIterator[bytes], context: Context) -> Any:
            key, role, _ = caller_of(context)
            opened = False
            try:
                self._open_stream(key, role, method)
                opened = True
                return await inner(self._decoded(raw_requests, decode, None), context)
            except Exception as exc:
                await self._fail(context, key, method, exc)
            finally:
                if opened:
                    self.streams.close(self.stream_key(key, method))

        return behaviour

    def _stream_stream(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(
            raw_requests: AsyncIterator[bytes], context: Context
        ) -> AsyncIterator[Any]:
            key, role, serial = caller_of(context)
            opened = False
            try:
                self._open_stream(key, role, method)
                opened = True
                meter = (
                    StreamMeter(self._budgets(), self.monotonic())
                    if method in METERED_STREAMS
                    else None
                )
                result = inner(self._decoded(raw_requests, decode, meter), context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:
                    await result
            except asyncio.CancelledError:
                await self._closed_here(context, serial)
                raise
            except Exception as exc:
                await self._fail(context, key, method, exc)
            finally:
                if opened:
                    self.streams.close(self.stream_key(key, method))

        return behaviour

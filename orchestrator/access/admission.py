"""Admission: what every RPC of both ports goes through before a service sees it.

A gRPC server interceptor that wraps every method handler:

- **who**: a caller presenting a certificate must hold one the store knows and has not
  revoked (:meth:`orchestrator.access.certificates.Orchestrator.check_certificate`) *before*
  it counts against any budget, so a stolen, revoked or superseded certificate can neither use nor
  exhaust the budgets of the gateway's current one.
- **deadlines**: gRPC's asyncio server has none of its own. Every call is taken in as a
  request *stream*, so admission sees it the moment it opens, before its request arrives:
  the request must arrive within ``request_timeout_s`` and a unary call must be answered
  within ``call_timeout_s``, or it ends with DEADLINE_EXCEEDED. A call held open without a
  request no longer holds the server's slot for ever.
- **strict decoding**: the request bytes are decoded here, and bytes that are not a valid
  message of the method's type are answered INVALID_ARGUMENT naming ``request``. (gRPC's
  own decoding answers UNKNOWN and logs a traceback per message, which lets any peer fill
  the logs.)
- **budgets** from :class:`orchestrator.access.limits.RateLimits`, keyed by the caller's
  certificate (identity URI and serial) or, without a client certificate, by its address:
  calls open at once, unary calls per second, concurrent streams, new streams per second,
  and messages and bytes per second on a GatewayLink stream. Over budget is
  RESOURCE_EXHAUSTED; a link stream over budget is closed.
- **the store away**: a call that could not reach the store is answered UNAVAILABLE (the
  replica is not ready, :mod:`orchestrator.ingest.readiness`), so a client tries another replica.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from foundation.errors import FieldError
from foundation.escaping import escape
from orchestrator.access.certificates import Certificates
from orchestrator.access.limits import (
    BucketMap,
    LimitError,
    LiveRates,
    RateLimits,
    StreamCounts,
    StreamMeter,
)
from orchestrator.access.peers import AuthError, peer_of
from orchestrator.metrics import Metrics
from orchestrator.store.connection import StoreUnavailable
from provisioning.identity import Role

log = logging.getLogger("ondijon.orchestrator.admission")

Context = grpc.aio.ServicerContext[Any, Any]
Decoder = Callable[[bytes], Any]

# Streams whose every message is metered against the link budgets.
METERED_STREAMS = frozenset({"/ondijon.v1.GatewayLink/Connect"})


class RequestError(FieldError):
    """The request of a call is missing or is not a message of the method's type."""


class DeadlineError(FieldError):
    """A call took longer than its deadline; ``field`` names what was late."""


@dataclass(frozen=True)
class Caller:
    """Who a call is from, as far as budgets go.

    Attributes:
        key: the budget key: ``<identity URI>#<certificate serial>``, or the client
            address (``ipv4:10.0.0.7``) without a certificate.
        role: the certificate's role ("" without one).
        serial: the certificate's serial ("" without one).
    """

    key: str
    role: str = ""
    serial: str = ""

    @property
    def anonymous(self) -> bool:
        return not self.serial


def certificate_key(identity_uri: str, serial_hex: str) -> str:
    """The budget key of a certificate: one per certificate, not per identity, so an
    older (stolen, revoked) certificate of a gateway cannot spend its current one's."""
    return f"{identity_uri}#{serial_hex}"


def address_of(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``: budgets are per host, not per port."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class Admission(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Decodes, counts and guards every call; see the module docstring."""

    def __init__(
        self,
        certificates: Certificates,
        rates: LiveRates,
        closing: Callable[[str], tuple[grpc.StatusCode, str] | None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.certificates = certificates
        self.rates = rates
        # Why this process closed a stream of a certificate serial (the hub's note), if it did.
        self.closing = closing
        self.monotonic = monotonic
        self.streams = StreamCounts()
        self.calls = StreamCounts()
        self._rates: RateLimits | None = None
        self._calls = self._opens = self._log_budget = BucketMap(0, 0, 0)
        self.refusals = 0

    def _budgets(self) -> RateLimits:
        # The limits can be replaced while running (tests, a reload): follow them.
        rates = self.rates.current
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
        self.metrics.admission_refusals.inc()
        if self._log_budget.take(key, 1, self.monotonic()):
            # The method is the path the client sent, whatever it is.
            log.warning("refused %s from %s: %s", escape(method), escape(key), exc)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    async def caller(self, context: Context) -> Caller:
        """Who the call is from; a certificate that is unknown, revoked or expired is
        refused here (AuthError) before it counts against anything."""
        if not context.auth_context().get("x509_pem_cert"):
            return Caller(address_of(context.peer()))
        peer = peer_of(context)
        await self.certificates.check(peer)
        return Caller(
            certificate_key(peer.identity.uri, peer.serial_hex),
            peer.identity.role.value,
            peer.serial_hex,
        )

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
        # Every handler takes its request as a stream: the behaviour starts when the call
        # opens, not when (if ever) its request arrives, so the deadlines and caps hold
        # from the first moment. On the wire a unary request is the same one message.
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_unary(method, decode, handler.unary_unary), None, serialize
            )
        if not handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
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

    @contextlib.contextmanager
    def _call_slot(self, caller: Caller) -> Iterator[None]:
        """Hold one of the caller's calls-at-once while a unary call is open."""
        rates = self._budgets()
        cap = rates.anonymous_calls_at_once if caller.anonymous else rates.calls_at_once
        self.calls.open(caller.key, cap, "calls at once")
        try:
            yield
        finally:
            self.calls.close(caller.key)

    @staticmethod
    def stream_key(key: str, method: str) -> str:
        """Streams are capped per caller and method: a gateway's link stream and its
        firmware download do not compete for one cap."""
        return f"{key} {method}"

    def _open_stream(self, caller: Caller, method: str) -> str:
        """Count a new stream of ``caller`` on ``method``; its key, to close it with."""
        rates = self._budgets()
        if not self._opens.take(caller.key, 1, self.monotonic()):
            raise LimitError(
                "streams",
                f"more than {rates.stream_opens_per_s:g} new streams/s "
                f"(burst {rates.stream_open_burst:g}); reconnect later",
            )
        gateway = caller.role == Role.GATEWAY.value
        cap = rates.streams_per_gateway if gateway else rates.streams_per_peer
        key = self.stream_key(caller.key, method)
        self.streams.open(key, cap)
        return key

    # -- decoding, deadlines and errors --------------------------------------------------------

    @staticmethod
    def _decode_one(decode: Decoder, raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:
            raise RequestError("request", f"not a valid message of this method ({exc})") from None

    async def _one_request(self, raw_requests: AsyncIterator[bytes], decode: Decoder) -> Any:
        """The single request of a unary-request method, within the request deadline."""
        timeout = self._budgets().request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                raw = await anext(aiter(raw_requests), None)
        except TimeoutError:
            raise DeadlineError("request", f"not received within {timeout:g} s") from None
        if raw is None:
            raise RequestError("request", "missing (the call was closed without one)")
        return self._decode_one(decode, raw)

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
        if isinstance(exc, AuthError):
            await context.abort(exc.code, str(exc))
        if isinstance(exc, DeadlineError):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        if isinstance(exc, FieldError):
            # The one place a service's field error becomes a status: a malformed message,
            # a refused document, a bad CSR. It always means nothing was changed.
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
        code, reason = self.closing(serial) or (
            grpc.StatusCode.CANCELLED,
            "stream closed by the orchestrator",
        )
        with contextlib.suppress(grpc.aio.UsageError, grpc.aio.InternalError):
            await context.abort(code, reason)

    # -- the four shapes of RPC -----------------------------------------------------------------

    def _unary_unary(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(raw_requests: AsyncIterator[bytes], context: Context) -> Any:
            key = address_of(context.peer())
            try:
                caller = await self.caller(context)
                key = caller.key
                self._take_call(key)
                timeout = self._budgets().call_timeout_s
                with self._call_slot(caller):
                    try:
                        async with asyncio.timeout(timeout):
                            return await inner(
                                await self._one_request(raw_requests, decode), context
                            )
                    except TimeoutError:
                        raise DeadlineError("call", f"not answered within {timeout:g} s") from None
            except Exception as exc:
                await self._fail(context, key, method, exc)

        return behaviour

    def _unary_stream(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(
            raw_requests: AsyncIterator[bytes], context: Context
        ) -> AsyncIterator[Any]:
            key, serial, opened = address_of(context.peer()), "", ""
            try:
                caller = await self.caller(context)
                key, serial = caller.key, caller.serial
                self._take_call(key)
                opened = self._open_stream(caller, method)
                result = inner(await self._one_request(raw_requests, decode), context)
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
                    self.streams.close(opened)

        return behaviour

    def _stream_unary(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(raw_requests: AsyncIterator[bytes], context: Context) -> Any:
            key, opened = address_of(context.peer()), ""
            try:
                caller = await self.caller(context)
                key = caller.key
                opened = self._open_stream(caller, method)
                return await inner(self._decoded(raw_requests, decode, None), context)
            except Exception as exc:
                await self._fail(context, key, method, exc)
            finally:
                if opened:
                    self.streams.close(opened)

        return behaviour

    def _stream_stream(self, method: str, decode: Decoder, inner: Any) -> Any:
        async def behaviour(
            raw_requests: AsyncIterator[bytes], context: Context
        ) -> AsyncIterator[Any]:
            key, serial, opened = address_of(context.peer()), "", ""
            try:
                caller = await self.caller(context)
                key, serial = caller.key, caller.serial
                opened = self._open_stream(caller, method)
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
                    self.streams.close(opened)

        return behaviour

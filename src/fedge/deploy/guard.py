"""The gRPC front of ``fedge serve``: who may hold a server thread, for how long, and how refusals are logged.

:class:`Gate` answers every call. It authenticates a call from its signed metadata
(:meth:`~fedge.deploy.auth.Verifier.authenticate`) when gRPC hands it over, before a
single byte of the body is read: an unauthenticated caller gets its refusal at once and
never holds a thread that waits for its messages. Every server-side handler reads its
requests as a stream (a node's unary call is the same on the wire), so that
:class:`Watchdog` sees each message arrive: a call that waits longer than ``stall_s`` for
its next message (or for a node to take the next Fetch chunk) is cancelled, and so is
any call older than ``call_deadline_s``. :class:`Slots` bounds what is in flight: one
Push and one Fetch per node, two short calls per node, Push and Fetch streams in total
below the thread count (the rest of the threads always answer Join, Poll and Status),
two Status calls; beyond that a call is refused RESOURCE_EXHAUSTED, which nodes retry
with backoff. :class:`RefusalLog` keeps a flood of refusals from flooding the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import grpc

from fedge.core.errors import FedgeError
from fedge.deploy.auth import AuthError, Caller
from fedge.deploy.ratelimit import RefusalLog
from fedge.deploy.service import FedgeService, Refused

log = logging.getLogger("fedge.deploy")
SERVICE = "fedge.deploy.Fedge"
STREAMS = ("Push", "Fetch")
SHORT = ("Join", "Poll", "SecAgg")
PER_NODE = {"Push": 1, "Fetch": 1, "short": 2}
"""Calls one node may have in flight at once, by kind (``short`` = Join, Poll and SecAgg together)."""
STATUS_SLOTS = 2
"""Status calls in flight at once: an unauthenticated reader can take no more threads than this."""


def grpc_status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)  # type: ignore[no-any-return]


class Slots:
    """Calls in flight, per node and kind and in total; a call over a limit is refused, never queued."""

    def __init__(self, max_streams: int, status: int = STATUS_SLOTS) -> None:
        self.limits = {"streams": max_streams, "Status": status}
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], int] = {}

    def acquire(self, method: str, node: str) -> Callable[[], None]:
        """Take the slots of one ``method`` call by ``node`` (``""`` for Status); return their release."""
        kind = method if method in STREAMS else "short"
        keys = [("Status", "")] if method == "Status" else [(kind, node)]
        if method in STREAMS:
            keys.append(("streams", ""))
        with self._lock:
            for key in keys:
                limit = self.limits[key[0]] if key[0] in self.limits else PER_NODE[key[0]]
                if self._held.get(key, 0) >= limit:
                    who = f"node {node} has" if key[1] else "the server has"
                    raise Refused("RESOURCE_EXHAUSTED", f"{who} {limit} {key[0]} call(s) in flight; retry later")
            for key in keys:
                self._held[key] = self._held.get(key, 0) + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                for key in keys:
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]

        return release


@dataclass(eq=False)
class Watched:
    """One call as the watchdog sees it: when it started, and since when it waits on its peer."""

    context: grpc.ServicerContext
    method: str
    node: str
    started: float = field(default_factory=time.monotonic)
    waiting_since: float | None = None
    cut: str = ""

    def reading(self, requests: Iterable[bytes]) -> Iterator[bytes]:
        """The call's request messages; waiting for each one counts towards the stall limit."""
        it = iter(requests)
        while True:
            self.waiting_since = time.monotonic()
            try:
                raw = next(it)
            except StopIteration:
                self._check_cut()
                return
            except grpc.RpcError:
                self._check_cut()
                raise Refused("CANCELLED", f"{self.method} call ended by the node") from None
            finally:
                self.waiting_since = None
            yield raw

    def sending(self, replies: Iterable[bytes]) -> Iterator[bytes]:
        """The call's reply messages; the time gRPC takes to pass each one on counts towards the stall limit."""
        for raw in replies:
            self.waiting_since = time.monotonic()
            yield raw
            self.waiting_since = None

    def first(self, requests: Iterable[bytes]) -> bytes:
        for raw in self.reading(requests):
            return raw
        raise Refused("INVALID_ARGUMENT", f"{self.method} call without a request message")

    def _check_cut(self) -> None:
        if self.cut:
            raise Refused("DEADLINE_EXCEEDED", self.cut)


class Watchdog:
    """Cancels calls that stall (no message for ``stall_s``) or outlive ``deadline_s``.

    Its thread runs only while calls are in flight, so a stopped server leaves none behind.
    """

    def __init__(self, stall_s: float, deadline_s: float, refusals: RefusalLog) -> None:
        self.stall_s, self.deadline_s, self.refusals = stall_s, deadline_s, refusals
        self.tick_s = max(0.05, min(1.0, stall_s / 4))
        self._lock = threading.Lock()
        self._calls: set[Watched] = set()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, context: grpc.ServicerContext, method: str, node: str) -> Iterator[Watched]:
        call = Watched(context, method, node)
        with self._lock:
            self._calls.add(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fedge-watchdog", daemon=True)
                self._thread.start()
        try:
            yield call
        finally:
            with self._lock:
                self._calls.discard(call)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                if not self._calls:
                    self._thread = None
                    return
                late = [(c, self._problem(c, now)) for c in self._calls if not c.cut]
            for call, problem in late:
                if problem:
                    call.cut = problem
                    self.refusals.refused(call.method, "CANCELLED", problem, event="call_cut", node=call.node or "-")
                    call.context.cancel()

    def _problem(self, call: Watched, now: float) -> str:
        if now - call.started > self.deadline_s:
            return f"{call.method} call cut: still running after call_deadline_s={self.deadline_s:g}"
        since = call.waiting_since
        if since is not None and now - since > self.stall_s:
            return f"{call.method} call cut: no progress for stall_s={self.stall_s:g}"
        return ""


def refuse(context: grpc.ServicerContext, method: str, exc: Exception, refusals: RefusalLog) -> NoReturn:
    """End the call with the status a refusal names (INVALID_ARGUMENT for other fedge errors); log it, rate-limited."""
    if isinstance(exc, Refused | AuthError):
        code, message = exc.code, str(exc)
    elif isinstance(exc, FedgeError):
        code, message = "INVALID_ARGUMENT", str(exc)
    else:
        log.exception("event=handler_error method=%s", method)
        code, message = "INTERNAL", f"{method} failed: {type(exc).__name__}"
    if code != "INTERNAL" and context.is_active():  # a call already cut or cancelled was logged, or is nobody's news
        refusals.refused(method, code, message)
    context.abort(grpc_status(code), message)
    raise AssertionError("ServicerContext.abort returned")


class Gate(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The service's handlers on raw bytes (the signature covers the exact bytes sent), behind
    authentication from metadata, per-node and total limits, and the watchdog."""

    def __init__(self, svc: FedgeService, *, max_streams: int, stall_s: float, deadline_s: float) -> None:
        self.svc = svc
        self.slots = Slots(max_streams)
        self.watchdog = Watchdog(stall_s, deadline_s, svc.refusals)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = str(details.method).strip("/").partition("/")  # type: ignore[attr-defined]
        if service != SERVICE or method not in (*SHORT, *STREAMS, "Status"):
            return None
        if method == "Status":
            return grpc.stream_unary_rpc_method_handler(self._status)
        try:
            caller = self.svc.verifier.authenticate(method, details.invocation_metadata)  # type: ignore[attr-defined]
        except AuthError as exc:
            return self._refusal(method, exc.code, str(exc))
        except FedgeError as exc:  # the allow-list file became unreadable
            log.error("event=auth_error method=%s reason=%r", method, str(exc))
            return self._refusal(method, "UNAVAILABLE", "the server cannot check node keys right now")
        if method == "Fetch":
            return grpc.stream_stream_rpc_method_handler(lambda reqs, context: self._fetch(caller, reqs, context))
        if method == "Push":
            return grpc.stream_unary_rpc_method_handler(lambda reqs, context: self._push(caller, reqs, context))
        return grpc.stream_unary_rpc_method_handler(lambda reqs, context: self._short(method, caller, reqs, context))

    def _refusal(self, method: str, code: str, reason: str) -> grpc.RpcMethodHandler:
        """A handler that answers ``code`` without reading the request (it is request-streaming,
        so gRPC reads nothing either)."""
        self.svc.refusals.refused(method, code, reason)

        def answer(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            context.abort(grpc_status(code), reason)
            raise AssertionError("ServicerContext.abort returned")

        return grpc.stream_unary_rpc_method_handler(answer)

    @contextmanager
    def _admitted(self, context: grpc.ServicerContext, method: str, node: str) -> Iterator[Watched]:
        release = self.slots.acquire(method, node)
        try:
            with self.watchdog.watch(context, method, node) as call:
                yield call
        finally:
            release()

    def _status(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            with self._admitted(context, "Status", "") as call:
                return self.svc.status_reply(call.first(requests), ())
        except Exception as exc:
            refuse(context, "Status", exc, self.svc.refusals)

    def _short(self, method: str, caller: Caller, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        handle = {"Join": self.svc.join, "Poll": self.svc.poll, "SecAgg": self.svc.secagg_post}[method]
        try:
            with self._admitted(context, method, caller.node_id) as call:
                return handle(call.first(requests), caller)
        except Exception as exc:
            refuse(context, method, exc, self.svc.refusals)

    def _push(self, caller: Caller, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            with self._admitted(context, "Push", caller.node_id) as call:
                return self.svc.push(call.reading(requests), caller)
        except Exception as exc:
            refuse(context, "Push", exc, self.svc.refusals)

    def _fetch(self, caller: Caller, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            with self._admitted(context, "Fetch", caller.node_id) as call:
                yield from call.sending(self.svc.fetch(call.first(requests), caller))
        except Exception as exc:
            refuse(context, "Fetch", exc, self.svc.refusals)

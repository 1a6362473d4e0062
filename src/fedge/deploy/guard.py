"""The gRPC front of ``fedge serve``: event-driven; who may hold a call, for how long; how refusals are logged.

:class:`Gate` answers every call on a ``grpc.aio`` event loop, so a connected node costs a
coroutine and a few hundred bytes, not a thread: ten thousand nodes each hold a Subscribe
stream on which the server pushes work the moment a round, an evaluation or a protocol
stage opens (:meth:`FedgeService.next_for`), and which is also the node's heartbeat. Work
that blocks — SQLite, decoding an update, the status snapshot — runs on a small thread pool.

A call is authenticated from its signed metadata (:meth:`~fedge.deploy.auth.Verifier.authenticate`)
when gRPC hands it over, before a byte of its body is read: an unauthenticated caller gets its
refusal at once. Every handler reads its requests as a stream (a node's unary call is the same
on the wire) with a stall limit: a call that waits longer than ``stall_s`` for its next
message (or for a node to take the next message it is sent) is cut, and so is any call older
than ``call_deadline_s`` (a Subscribe stream then ends cleanly and its node opens another).
A Push that ends before its last chunk, however it ends, leaves its verified chunks with the
service for its node to resume (:meth:`~fedge.deploy.service.FedgeService.keep`).
:class:`Slots` bounds what is in flight: one Push, one Fetch and two short calls per node,
``max_streams`` Push and Fetch streams in all, two Status calls, one Subscribe per node (a new
one replaces the old); beyond that a call is refused RESOURCE_EXHAUSTED, which nodes retry with
backoff. :class:`~fedge.deploy.ratelimit.RefusalLog` keeps a flood of refusals from flooding
the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio

from fedge.core.errors import FedgeError
from fedge.deploy.auth import AuthError, Caller
from fedge.deploy.service import PING, REJOIN, STOP, FedgeService, Refused

log = logging.getLogger("fedge.deploy")
SERVICE = "fedge.deploy.Fedge"
STREAMS = ("Push", "Fetch")
SHORT = ("Join", "Poll", "SecAgg")
PER_NODE = {"Push": 1, "Fetch": 1, "short": 2}
"""Calls one node may have in flight at once, by kind (``short`` = Join, Poll and SecAgg together)."""
STATUS_SLOTS = 2
"""Status calls in flight at once: an unauthenticated reader can hold no more than this."""
T = TypeVar("T")
SENDING = 16
"""Fetch chunks handed to gRPC at once (server-wide): a broadcast holds at most this many copies of a chunk."""
INLINE_DECODE = 1 << 20
"""A push of at most this many bytes is decoded on the event loop (a thread hop costs more than the decode)."""


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
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                for key in keys:
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]

        return release


class Cut(Exception):
    """A call stalled or outlived its deadline: the server ends it."""


class Gone(Exception):
    """The peer of a call went away while it was being sent something: nothing more to tell it."""


class Watched:
    """One call's clock: its deadline, and the stall limit on each message it waits for or sends."""

    def __init__(self, context: grpc.aio.ServicerContext, method: str, node: str, stall_s: float, deadline_s: float):
        self.context, self.method, self.node = context, method, node
        self.stall_s, self.deadline_s = stall_s, deadline_s
        self.started = time.monotonic()

    def left(self) -> float:
        return self.deadline_s - (time.monotonic() - self.started)

    async def step(self, awaitable: Awaitable[T]) -> T:
        """Await one message in or out, cut after ``stall_s`` or at the call deadline."""
        left = self.left()
        limit = min(self.stall_s, left)
        try:
            async with asyncio.timeout(limit):
                return await awaitable
        except TimeoutError:
            if left <= self.stall_s:
                raise Cut(f"{self.method} call cut: still running after call_deadline_s={self.deadline_s:g}") from None
            raise Cut(f"{self.method} call cut: no progress for stall_s={self.stall_s:g}") from None

    async def next(self, requests: AsyncIterator[bytes]) -> bytes | None:
        """The call's next request message; None at its end."""
        try:
            return await self.step(requests.__anext__())
        except StopAsyncIteration:
            return None

    async def first(self, requests: AsyncIterator[bytes]) -> bytes:
        raw = await self.next(requests)
        if raw is None:
            raise Refused("INVALID_ARGUMENT", f"{self.method} call without a request message")
        return raw

    async def send(self, raw: bytes) -> None:
        try:
            await self.step(self.context.write(raw))
        except Cut:
            raise
        except Exception as exc:  # the call ended under us: the node left or cancelled
            raise Gone(f"{self.method} peer gone ({type(exc).__name__})") from None


class Gate(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The service's handlers on raw bytes (the signature covers the exact bytes sent), behind
    authentication from metadata, per-node and total limits, and stall limits; run on ``loop``."""

    def __init__(
        self,
        svc: FedgeService,
        *,
        max_streams: int,
        stall_s: float,
        deadline_s: float,
        pool: Executor,
        ping_s: float,
    ) -> None:
        self.svc, self.pool = svc, pool
        self.slots = Slots(max_streams)
        self.stall_s, self.deadline_s, self.ping_s = stall_s, deadline_s, ping_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._subscriptions: dict[str, asyncio.Task[Any]] = {}
        self._sending: asyncio.Semaphore | None = None
        """Fetch chunks being handed to gRPC at once, all nodes together: gRPC copies each message it is
        given, so without this bound a broadcast to N nodes would hold N copies of a chunk."""

    # -- wiring -------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (called on it): the service's changes wake every subscription."""
        self.loop = loop
        self._changed = asyncio.Event()
        self._sending = asyncio.Semaphore(SENDING)

        def changed() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._wake)

        self.svc.on_change = changed

    def _wake(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        if old is not None:
            old.set()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        assert self.loop is not None
        return await self.loop.run_in_executor(self.pool, fn, *args)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = str(details.method).strip("/").partition("/")  # type: ignore[attr-defined]
        if service != SERVICE or method not in (*SHORT, *STREAMS, "Status", "Subscribe"):
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

        if method in ("Fetch", "Subscribe"):
            handle = self._fetch if method == "Fetch" else self._subscribe

            async def streaming(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
                await handle(caller, requests, context)

            return grpc.stream_stream_rpc_method_handler(streaming)
        if method == "Push":

            async def push(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
                return await self._push(caller, requests, context)

            return grpc.stream_unary_rpc_method_handler(push)

        async def short(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            return await self._short(method, caller, requests, context)

        return grpc.stream_unary_rpc_method_handler(short)

    def _refusal(self, method: str, code: str, reason: str) -> grpc.RpcMethodHandler:
        """A handler that answers ``code`` without reading the request."""
        self.svc.refusals.refused(method, code, reason)

        async def answer(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc_status(code), reason)
            raise AssertionError("ServicerContext.abort returned")

        return grpc.stream_unary_rpc_method_handler(answer)

    async def _refuse(
        self, context: grpc.aio.ServicerContext, call: Watched | None, method: str, exc: Exception
    ) -> NoReturn:
        """End the call with the status a refusal names (INVALID_ARGUMENT for other fedge errors); log it."""
        refusals = self.svc.refusals
        if isinstance(exc, Cut):
            code, message = "CANCELLED", str(exc)
            refusals.refused(method, code, message, event="call_cut", node=(call.node if call else "") or "-")
        elif isinstance(exc, Refused | AuthError):
            code, message = exc.code, str(exc)
            refusals.refused(method, code, message)
        elif isinstance(exc, FedgeError):
            code, message = "INVALID_ARGUMENT", str(exc)
            refusals.refused(method, code, message)
        else:
            log.error("event=handler_error method=%s", method, exc_info=exc)
            code, message = "INTERNAL", f"{method} failed: {type(exc).__name__}"
        await context.abort(grpc_status(code), message)
        raise AssertionError("ServicerContext.abort returned")

    def _watch(self, context: grpc.aio.ServicerContext, method: str, node: str) -> Watched:
        return Watched(context, method, node, self.stall_s, self.deadline_s)

    @contextmanager
    def _slot(self, method: str, node: str) -> Iterator[None]:
        """Hold one ``method`` call's slots for ``node`` (refused at once when over a limit)."""
        release = self.slots.acquire(method, node)
        try:
            yield
        finally:
            release()

    # -- handlers -----------------------------------------------------------------
    async def _status(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        call = self._watch(context, "Status", "")
        try:
            with self._slot("Status", ""):
                raw = await call.first(requests)
                return await self._blocking(self.svc.status_reply, raw, ())
        except Exception as exc:
            await self._refuse(context, call, "Status", exc)

    async def _short(
        self, method: str, caller: Caller, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        handle = {"Join": self.svc.join, "Poll": self.svc.poll, "SecAgg": self.svc.secagg_post}[method]
        call = self._watch(context, method, caller.node_id)
        try:
            with self._slot(method, caller.node_id):
                raw = await call.first(requests)
                if method == "Poll":
                    return handle(raw, caller)  # memory only: answered on the loop
                if method == "SecAgg":
                    return await self._blocking(handle, raw, caller, await self._parts(call, requests))
                return await self._blocking(handle, raw, caller)
        except Exception as exc:
            await self._refuse(context, call, method, exc)

    async def _parts(self, call: Watched, requests: AsyncIterator[bytes]) -> list[bytes]:
        """The further parts of a large secure-aggregation answer, no more than the open stage takes."""
        limit, total, parts = self.svc.secagg_limit(), 0, []
        while (raw := await call.next(requests)) is not None:
            total += len(raw)
            if total > limit + 4096:
                raise Refused("INVALID_ARGUMENT", f"secure-aggregation answer exceeds the {limit} bytes of its stage")
            parts.append(raw)
        return parts

    async def _push(self, caller: Caller, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        svc, node_id = self.svc, caller.node_id
        call = self._watch(context, "Push", node_id)
        try:
            with self._slot("Push", node_id):
                opened = svc.push_open(await call.first(requests), caller)
                if isinstance(opened, bytes):
                    return opened
                with svc.budget.reserve(node_id) as held:
                    try:
                        opened.take_inline(held)
                        try:
                            while (raw := await call.next(requests)) is not None:
                                opened.add(raw, held)
                        except BaseException as exc:  # cut, stalled or cancelled: its verified chunks are kept
                            opened.cut(exc, held)
                            raise
                        if (short := opened.ended(held)) is not None:
                            return short
                        small = opened.inc is None or opened.inc.received_bytes <= INLINE_DECODE
                        result = opened.finish() if small else await self._blocking(opened.finish)
                    except (Refused, Cut):
                        raise
                    except (FedgeError, ValueError) as exc:
                        return opened.refused(exc)
                    assert self.loop is not None
                    loop, woken = self.loop, asyncio.Event()

                    def wake() -> None:
                        loop.call_soon_threadsafe(woken.set)

                    verdict = svc.deliver(opened.task, result, on_set=wake)
                    del result
                    if verdict is None:
                        return opened.closed_reply()
                    while not verdict.event.is_set():
                        try:
                            async with asyncio.timeout(0.5):
                                await woken.wait()
                        except TimeoutError:
                            opened.expire(verdict)
                return opened.reply(verdict)
        except Exception as exc:
            await self._refuse(context, call, "Push", exc)

    async def _fetch(self, caller: Caller, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        call = self._watch(context, "Fetch", caller.node_id)
        try:
            with self._slot("Fetch", caller.node_id):
                assert self._sending is not None
                for raw in self.svc.fetch(await call.first(requests), caller):
                    async with self._sending:
                        await call.send(raw)
        except Gone:
            return
        except Exception as exc:
            await self._refuse(context, call, "Fetch", exc)

    async def _subscribe(
        self, caller: Caller, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Push the node what is due the moment it is due; a ping every ``ping_s`` otherwise.

        The stream ends cleanly at the call deadline, when its node joins again (a new
        session), or after STOP; a second Subscribe of the same node replaces this one.
        """
        svc, node_id = self.svc, caller.node_id
        call = self._watch(context, "Subscribe", node_id)
        me = asyncio.current_task()
        try:
            node = svc.subscribe_open(await call.first(requests), caller)
            if node is None:
                await call.send(REJOIN)
                return
            old = self._subscriptions.get(node_id)
            if old is not None and old is not me:
                old.cancel()
            assert me is not None
            self._subscriptions[node_id] = me
            node.streams += 1
            sent: set[str] = set()
            try:
                while svc.is_current(node):
                    changed = self._changed
                    assert changed is not None
                    out = svc.next_for(node, sent)
                    if out is not None:
                        await call.send(out)
                        if out is STOP:
                            return
                        continue
                    wait = min(self.ping_s, call.left())
                    if wait <= 0:
                        return  # the call deadline: end cleanly, the node subscribes again
                    try:
                        async with asyncio.timeout(wait):
                            await changed.wait()
                    except TimeoutError:
                        await call.send(PING)
            finally:
                node.streams -= 1
                node.last_seen = time.time()
                if self._subscriptions.get(node_id) is me:
                    del self._subscriptions[node_id]
        except Gone:
            return
        except Exception as exc:
            await self._refuse(context, call, "Subscribe", exc)

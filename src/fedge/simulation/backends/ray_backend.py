"""The ``ray`` backend: the ``processes`` worker design on Ray actors.

Each actor holds the client runtime (shipped once through the object store) and one
reused model, trains its share of the cohort sequentially and returns one partial sum,
exactly as a worker process does. ``ray.init(address=...)`` joins an existing cluster;
with no address a local Ray instance is started. An address that does not answer is
reported after a bounded wait instead of hanging; an actor that dies mid-round loses
its share (reported as failures) and is replaced before the next round.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

from fedge.core.errors import TransportError
from fedge.simulation.backends._shard import Outcome, Task, emit, lost, run_task, split_round
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask

log = logging.getLogger(__name__)


def wait_for_address(address: str, timeout_s: float) -> None:
    """Raise :class:`TransportError` unless ``host:port`` accepts a TCP connection in time."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise TransportError(f"engine.ray_address: {address!r} is not host:port")
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.1, min(2.0, timeout_s))):
                return
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TransportError(
                f"engine.ray_address: no Ray cluster answers at {address} after {timeout_s:g} s ({last})"
            )
        time.sleep(0.25)


class _Actor:
    """The body of a Ray actor: a client runtime and the worker loop of one share."""

    def __init__(self, runtime: ClientRuntime, threads: int) -> None:
        from fedge.core.threads import apply_threads

        apply_threads(threads)
        self.runtime = runtime

    def run(self, task: Task) -> Outcome:
        return run_task(self.runtime, task)

    def ping(self) -> bool:
        return True


class RayBackend:
    """Train the cohort on ``workers`` Ray actors (default: the cluster's CPU count)."""

    name = "ray"

    def __init__(
        self,
        address: str = "",
        workers: int = 0,
        connect_timeout_s: float = 15.0,
        threads_per_worker: int = 1,
        timeout_s: float = 0.0,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.workers = workers
        self.connect_timeout_s = connect_timeout_s
        self.threads_per_worker = threads_per_worker
        self._actors: list[Any] = []
        self._runtime: ClientRuntime | None = None
        self._runtime_ref: Any = None
        self._started = False

    def configure(self, engine: Any) -> None:
        """Take options from the ``[engine]`` config section."""
        self.address = str(engine.ray_address)
        self.workers = int(engine.workers)
        self.connect_timeout_s = float(engine.ray_connect_timeout_s)
        self.timeout_s = float(engine.worker_timeout_s)

    def _init(self) -> Any:
        import ray

        if not ray.is_initialized():
            if self.address and self.address != "auto":
                wait_for_address(self.address, self.connect_timeout_s)
            try:
                if self.address:
                    ray.init(
                        address=self.address,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
                else:
                    ray.init(
                        num_cpus=self.workers or None,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise TransportError(
                    f"engine.ray_address: cannot join Ray at {self.address or 'a new local instance'}: {exc}"
                ) from None
            self._started = True
        return ray

    @property
    def size(self) -> int:
        if self.workers > 0:
            return self.workers
        ray = self._init()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _ensure(self, runtime: ClientRuntime) -> None:
        ray = self._init()
        if self._runtime is not runtime:
            self._kill_all()
            self._runtime = runtime
            self._runtime_ref = ray.put(runtime)
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_Actor)
        while len(self._actors) < self.size:
            self._actors.append(actor_cls.remote(self._runtime_ref, self.threads_per_worker))

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        if not task.client_ids:
            return
        self._ensure(task.runtime)
        states = task.states
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        tasks = split_round(task, self.size)
        pending: dict[Any, tuple[Any, list[int]]] = {}
        for actor, part in zip(self._actors, tasks, strict=False):
            pending[actor.run.remote(part)] = (actor, part.client_ids)
        deadline = time.monotonic() + self.timeout_s if self.timeout_s > 0 else None
        while pending:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not done:
                for ref, (actor, share) in list(pending.items()):
                    del pending[ref]
                    ray.kill(actor)
                    self._actors.remove(actor)
                    yield from lost(share, f"ray actor timed out after {self.timeout_s:g} s")
                return
            for ref in done:
                actor, share = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError as exc:
                    reason = f"ray actor died: {type(exc).__name__}"
                    log.warning("ray backend: %s; %d clients lost this round", reason, len(share))
                    self._actors.remove(actor)
                    yield from lost(share, reason)
                    continue
                except RayTaskError as exc:
                    yield from lost(share, f"worker error: {exc.cause!r}")
                    continue
                yield from emit(outcome, states)

    def _kill_all(self) -> None:
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
        self._actors = []

    def close(self) -> None:
        if not self._started:
            return
        import ray

        self._kill_all()
        self._runtime = None
        self._runtime_ref = None
        if ray.is_initialized():
            ray.shutdown()
        self._started = False

"""The ray backend on a real local cluster started with ``ray start --head``."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedge.clients.base import LearnerClient
from fedge.core.errors import TransportError
from fedge.core.params import Params
from fedge.core.types import TrainConfig
from fedge.data.w2 import w2
from fedge.engine import run
from fedge.models import build_learner
from fedge.simulation.backends import RayBackend
from fedge.simulation.sampling import Sampling
from fedge.strategies import Ditto, FedRep
from fedge.strategies.base import Strategy
from fedge.strategies.ditto import STATE_KEY as DITTO_KEY
from fedge.strategies.fedper import STATE_KEY as HEAD_KEY
from fedge.strategies.scaffold import STATE_KEY, Scaffold
from fedge.transport.inprocess import BACKENDS, Backend, InProcessTransport

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(backend: Backend, strategy: Strategy | None = None, clients: int = 10) -> tuple[Params, InProcessTransport]:
    """Three rounds of ``strategy`` (SCAFFOLD by default) over ``clients`` clients, six per round."""
    data = w2(clients, samples_per_client=12, test_size=0, seed=1)
    learner = build_learner("mlp", "torch", (60,), 10, (8,))
    strategy = strategy or Scaffold()
    transport = InProcessTransport(
        lambda cid: LearnerClient(cid, learner, data.client(cid)),
        data.num_clients,
        strategy=strategy,
        seed=5,
        backend=backend,
    )
    try:
        result = run(
            strategy=strategy,
            transport=transport,
            initial_params=learner.init_params(5),
            rounds=3,
            sampling=Sampling(count=6),
            seed=5,
            train=TrainConfig(epochs=1, batch_size=5, lr=0.1),
        )
    finally:
        transport.close()
    return result.state.params, transport


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A real head node on 127.0.0.1, in its own process group, stopped by its own id.

    ``ray start --block`` stays in the foreground and tears its processes down on SIGTERM,
    so only this cluster is stopped (``ray stop`` would stop every Ray on the machine).
    Token authentication is off, as for the driver, whatever ``~/.ray`` holds.
    """
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="fr", dir="/tmp")
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={tmp}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert head.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in head.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in lines.get(timeout=max(deadline - time.monotonic(), 0.1)):
            pass
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        head.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.integration
def test_ray_cluster_gives_the_debug_model_and_keeps_client_state(ray_cluster: str) -> None:
    got, transport = _run(RayBackend(address=ray_cluster, workers=2))
    want, reference = _run(BACKENDS["debug"]())
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    for cid, state in reference.states.items():
        if STATE_KEY in state:
            for a, b in zip(transport.states[cid][STATE_KEY], state[STATE_KEY], strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_silent_ray_address_fails_after_a_bounded_wait() -> None:
    backend = RayBackend(address=f"127.0.0.1:{_free_port()}", workers=1, connect_timeout_s=1.0)
    with pytest.raises(TransportError, match=r"no Ray cluster answers at 127\.0\.0\.1"):
        _run(backend)


def test_malformed_ray_address_is_named() -> None:
    with pytest.raises(TransportError, match="'nowhere' is not host:port"):
        _run(RayBackend(address="nowhere", workers=1))


@pytest.mark.integration
def test_ray_cluster_keeps_personal_models_across_rounds(ray_cluster: str) -> None:
    """Ditto's personal models and FedRep's heads come back from the actors each round, as on debug."""
    for make, key in ((lambda: Ditto(ditto_lambda=0.5), DITTO_KEY), (FedRep, HEAD_KEY)):
        _, got = _run(RayBackend(address=ray_cluster, workers=2), make(), clients=6)
        _, want = _run(BACKENDS["debug"](), make(), clients=6)
        assert {c for c, s in got.states.items() if key in s} == set(range(6))
        for cid, state in want.states.items():
            for a, b in zip(got.states[cid][key], state[key], strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

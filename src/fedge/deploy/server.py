"""``fedge serve``: the round loop over gRPC, with its state checkpointed in SQLite.

:func:`serve` builds the experiment (data for central evaluation, strategy, pipeline),
opens or resumes the run's SQLite store, starts a gRPC server (TLS, mutual TLS when a
client CA is given) and runs :func:`fedge.simulation.loop.run` with a
:class:`~fedge.deploy.transport.GrpcTransport`. After every round the record and the
full strategy state are checkpointed in one transaction; ``resume=True`` continues from
the last completed round.
"""

from __future__ import annotations

import logging
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fedge.config.schema import Experiment, from_dict, to_toml
from fedge.core.errors import ConfigError, FedgeError
from fedge.core.params import Params
from fedge.deploy import wire
from fedge.deploy.auth import Verifier
from fedge.deploy.config import DeployConfig
from fedge.deploy.service import FedgeService, Metadata, Refused
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.simulation.history import History, RoundRecord
from fedge.simulation.loop import Callback, EvalPlan, RunResult, StopRun, run
from fedge.strategies.base import StrategyState

log = logging.getLogger("fedge.deploy")
SERVICE = "fedge.deploy.Fedge"
MESSAGE_LIMIT = wire.MAX_CHUNK + (1 << 20)
GRPC_OPTIONS = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)  # type: ignore[no-any-return]


def _refuse(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, Refused):
        context.abort(_status(exc.code), str(exc))
    if isinstance(exc, FedgeError):
        log.warning("event=refused method=%s code=INVALID_ARGUMENT reason=%r", method, str(exc))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    log.exception("event=handler_error method=%s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{method} failed: {type(exc).__name__}")


def grpc_handler(svc: FedgeService) -> grpc.GenericRpcHandler:
    """The service's handlers on raw bytes (the signature covers the exact bytes sent)."""

    def unary(method: str, fn: Callable[[bytes, Metadata], bytes]) -> grpc.RpcMethodHandler:
        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return fn(raw, context.invocation_metadata())
            except Exception as exc:
                _refuse(context, method, exc)
                raise

        return grpc.unary_unary_rpc_method_handler(handle)

    def fetch(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            chunks = svc.fetch(raw, context.invocation_metadata())
        except Exception as exc:
            _refuse(context, "Fetch", exc)
            raise
        yield from chunks

    def push(messages: Iterable[bytes], context: grpc.ServicerContext) -> bytes:
        try:
            return svc.push(messages, context.invocation_metadata())
        except Exception as exc:
            _refuse(context, "Push", exc)
            raise

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Join": unary("Join", svc.join),
            "Poll": unary("Poll", svc.poll),
            "Fetch": grpc.unary_stream_rpc_method_handler(fetch),
            "Push": grpc.stream_unary_rpc_method_handler(push),
            "Status": unary("Status", svc.status_reply),
            "SecAgg": unary("SecAgg", svc.secagg_post),
        },
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        raise ConfigError(f"deploy.{what}: cannot read {path}") from None


def start_grpc(svc: FedgeService, cfg: DeployConfig) -> tuple[grpc.Server, int]:
    """Start the gRPC server on ``cfg.host:cfg.port`` (port 0 = any free port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.workers), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc_handler(svc),))
    address = f"{cfg.host}:{cfg.port}"
    if cfg.tls_cert or cfg.tls_key:
        if not (cfg.tls_cert and cfg.tls_key):
            raise ConfigError("deploy: tls_cert and tls_key go together")
        ca = _read(cfg.client_ca, "client_ca") if cfg.client_ca else None
        creds = grpc.ssl_server_credentials(
            [(_read(cfg.tls_key, "tls_key"), _read(cfg.tls_cert, "tls_cert"))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port(address, creds)
    else:
        if cfg.client_ca:
            raise ConfigError("deploy.client_ca needs tls_cert and tls_key")
        port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigError(f"deploy: cannot listen on {address}")
    server.start()
    return server, port


class _Checkpoint(Callback):
    """Checkpoints each round and publishes it to the status API; stops on request."""

    def __init__(self, store: Store, svc: FedgeService, transport: GrpcTransport) -> None:
        self.store, self.svc, self.transport = store, svc, transport

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        self.store.checkpoint(record, state)
        self.svc.record_round(
            {
                "round": record.round,
                "participants": record.participants,
                "failed": record.failed,
                "train_loss": record.train_loss,
                "test_accuracy": record.test_accuracy,
                "wall_s": record.wall_s,
            }
        )
        log.info(
            "event=round_done round=%d participants=%d failed=%d train_loss=%.4g test_accuracy=%.4g wall_s=%.2f",
            record.round,
            record.participants,
            record.failed,
            record.train_loss,
            record.test_accuracy,
            record.wall_s,
        )
        if self.transport.stopping.is_set():
            raise StopRun("stopped by signal")


@dataclass
class Served:
    result: RunResult
    history: History
    run_id: str


def prepare(exp: Experiment, cfg: DeployConfig, *, resume: bool) -> tuple[Experiment, Store, str, StrategyState | None]:
    """Open the store; on resume, take the run's own config and last checkpoint from it."""
    store = Store(cfg.state)
    run_id = store.meta("run_id")
    if resume:
        text = store.meta("config")
        if run_id is None or text is None:
            raise ConfigError(f"{cfg.state}: no run to resume")
        stored = from_dict(tomllib.loads(text))
        stored.extensions["deploy"] = cfg
        return stored, store, run_id, store.load_state()
    if run_id is not None:
        raise ConfigError(f"{cfg.state} already holds run {run_id}; pass --resume or use another state file")
    run_id = uuid.uuid4().hex[:12]
    store.set_meta(run_id=run_id, config=to_toml(exp, commented=False))
    return exp, store, run_id, None


def serve(
    exp: Experiment,
    *,
    resume: bool = False,
    on_ready: Callable[[int], None] | None = None,
    transport_hook: Callable[[GrpcTransport], None] | None = None,
    linger_s: float | None = None,
) -> Served:
    """Run the whole federation; returns the history of this process's rounds and all rounds."""
    from fedge.experiment import build

    cfg: DeployConfig = exp.section("deploy")
    exp, store, run_id, state = prepare(exp, cfg, resume=resume)
    built = build(exp)
    verifier = Verifier(
        Path(cfg.allow_list) if cfg.allow_list else None,
        Path(cfg.revoked) if cfg.revoked else None,
        window_s=cfg.window_s,
    )
    svc = FedgeService(
        store=store,
        verifier=verifier,
        run_id=run_id,
        config_toml=to_toml(exp, commented=False),
        num_clients=built.data.num_clients,
        rounds=exp.rounds,
        min_nodes=cfg.min_nodes,
        heartbeat_s=cfg.heartbeat_s,
        node_timeout_s=cfg.node_timeout_s,
        chunk_size=cfg.chunk_kib * 1024,
        max_update_bytes=int(cfg.max_update_mib * 2**20),
        max_decoding=cfg.max_decoding,
    )
    transport = GrpcTransport(
        svc,
        wait_s=cfg.wait_s,
        round_deadline_s=cfg.round_deadline_s,
        round_min_nodes=cfg.round_min_nodes,
        secagg_stage_s=cfg.secagg_stage_s,
    )
    if transport_hook is not None:
        transport_hook(transport)
    _relay_secagg(built.pipeline.transforms, transport)
    server, port = start_grpc(svc, cfg)
    log.info(
        "event=listening address=%s:%d run=%s resume=%s from_round=%d",
        cfg.host,
        port,
        run_id,
        resume,
        0 if state is None else state.round_num,
    )
    if on_ready is not None:
        on_ready(port)
    x_c, y_c = built.data.central()
    evaluator: Callable[[Params], tuple[float, float]] | None = None
    if exp.evaluation.centralized and len(y_c):

        def evaluator(params: Params) -> tuple[float, float]:
            return built.learner.evaluate(params, x_c, y_c)

    try:
        result = run(
            strategy=built.strategy,
            transport=transport,
            initial_params=built.initial,
            rounds=exp.rounds,
            sampling=built.sampling,
            train=built.train,
            pipeline=built.pipeline,
            evaluator=evaluator,
            eval_plan=EvalPlan(every=exp.evaluation.every),
            seed=exp.seed,
            callbacks=[_Checkpoint(store, svc, transport)],
            state=state,
            max_update_norm=exp.training.max_update_norm or None,
            min_updates=exp.training.min_clients,
        )
        if result.stopped_early is None:
            svc.phase = "finished"
            transport.close()
            _linger(svc, cfg.heartbeat_s * 2 if linger_s is None else linger_s)
        else:
            svc.phase = "stopped"
            log.info("event=stopped round=%d reason=%r", result.state.round_num, result.stopped_early)
        return Served(result, History(store.records()), run_id)
    finally:
        server.stop(grace=1.0).wait()
        store.close()


def _relay_secagg(transforms: Iterable[Any], transport: GrpcTransport) -> None:
    """Secure aggregation runs its stages as message rounds with the nodes, not in-process."""
    from fedge.secagg.transform import SecureAggregation

    for t in transforms:
        if isinstance(t, SecureAggregation):
            t.runner = transport.run_secagg


def _linger(svc: FedgeService, seconds: float) -> None:
    """Keep answering polls briefly so connected nodes hear that the run is over."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(n.connected for n in svc.status().nodes):
        time.sleep(0.05)


def experiment_for(path: Path | None, overrides: dict[str, Any]) -> Experiment:
    """Load an experiment file and apply ``[deploy]`` overrides given on the command line."""
    from fedge.config import load

    exp = load(str(path)) if path else Experiment()
    cfg: DeployConfig = exp.section("deploy")
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    return exp

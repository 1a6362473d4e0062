"""``fedge serve``: the round loop over gRPC, with its state checkpointed in SQLite.

:func:`serve` builds the experiment (data for central evaluation, strategy, pipeline),
opens or resumes the run's SQLite store, starts a gRPC server (TLS, mutual TLS when a
client CA is given) and runs :func:`fedge.engine.run` with a
:class:`~fedge.deploy.transport.GrpcTransport`. After every round the record and the
full strategy state are checkpointed in one transaction; ``resume=True`` continues from
the last completed round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc
import grpc.aio

from fedge.config.schema import Experiment, from_dict, to_toml
from fedge.core.errors import ConfigError, DataError, TransportError
from fedge.core.params import Params
from fedge.deploy import security, wire
from fedge.deploy.auth import Verifier, parse_relays
from fedge.deploy.classes import ModelClass, model_classes
from fedge.deploy.config import DeployConfig
from fedge.deploy.guard import Gate
from fedge.deploy.node import Backoff
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Opened, Store
from fedge.deploy.transport import Classes, GrpcTransport
from fedge.engine import Callback, RoundState, RunResult, StopRun
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState
from fedge.strategies.influence import InfluenceBound, InfluenceLimits

if TYPE_CHECKING:
    from fedge.federation import Federation

log = logging.getLogger("fedge.deploy")
MESSAGE_LIMIT = wire.MAX_CHUNK + (1 << 20)
GRPC_OPTIONS = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        raise ConfigError(f"deploy.{what}: cannot read {path}") from None


def keepalive_options(cfg: DeployConfig) -> list[tuple[str, int]]:
    """HTTP/2 pings that find a node whose link died without a word (its stream then ends).

    One ping per connection every ``node_timeout_s``, answered within ``node_timeout_s``: a
    busy node or server answers late, and a shorter timeout (tried: half the interval) cut
    thousands of healthy streams of a 10,000-node fleet, which all reconnected at once."""
    every = max(1000, int(cfg.node_timeout_s * 1000))
    return [
        ("grpc.keepalive_time_ms", every),
        ("grpc.keepalive_timeout_ms", every),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_pings_without_data", 0),
        # No window growth past the initial 64 KiB a stream: what a node sends waits in its own
        # buffers until the server reads it, under the byte budget, instead of in the server's.
        ("grpc.http2.bdp_probe", 0),
    ]


class GrpcServer:
    """``grpc.aio`` server on its own event-loop thread, with a thread pool for blocking handler work.

    ``stop(grace).wait()`` as on a ``grpc.Server``; the port is :attr:`port`.
    """

    def __init__(self, svc: FedgeService, cfg: DeployConfig) -> None:
        self.svc, self.cfg = svc, cfg
        self.pool = futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fedge-handler")
        self.gate = Gate(
            svc,
            max_streams=cfg.max_streams,
            stall_s=cfg.stall_s,
            deadline_s=cfg.call_deadline_s,
            pool=self.pool,
            ping_s=max(cfg.heartbeat_s, cfg.node_timeout_s / 3),
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fedge-grpc", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        self._stopped = threading.Event()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        except BaseException:
            self._shutdown_loop()
            raise

    async def _start(self) -> int:
        cfg = self.cfg
        self.gate.bind(asyncio.get_running_loop())
        server = grpc.aio.server(options=[*GRPC_OPTIONS, *keepalive_options(cfg)])
        server.add_generic_rpc_handlers((self.gate,))
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
        await server.start()
        self._server = server
        return int(port)

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop serving (calls in flight get ``grace`` seconds); the event is set once stopped."""
        if not self._stopped.is_set() and not self.loop.is_closed():
            server = self._server
            if server is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(server.stop(grace), self.loop).result((grace or 0) + 30)
            self._shutdown_loop()
        return self._stopped

    def _shutdown_loop(self) -> None:
        self.svc.on_change = lambda: None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()


def start_grpc(svc: FedgeService, cfg: DeployConfig) -> tuple[GrpcServer, int]:
    """Start the gRPC server on ``cfg.host:cfg.port`` (port 0 = any free port).

    Without ``tls_cert``/``tls_key`` it serves plaintext only with ``cfg.insecure``. The
    server is event-driven (:mod:`fedge.deploy.guard`): a connected node holds a stream, not
    a thread; ``cfg.workers`` threads run the blocking parts of handlers.
    """
    security.check_plaintext(cfg)
    svc.refusals.window_s = cfg.refusal_log_s
    server = GrpcServer(svc, cfg)
    return server, server.port


STOPPED_BY_SIGNAL = "stopped by signal"
"""``stopped_early`` of a run interrupted by SIGTERM: it continues with ``--resume``. Any other
early stop (a privacy budget, a target accuracy) ends the run."""


class _Checkpoint(Callback):
    """Checkpoints each round and publishes it to the status API; stops on request."""

    def __init__(self, store: Store, svc: FedgeService, transport: GrpcTransport) -> None:
        self.store, self.svc, self.transport = store, svc, transport

    def on_round_state(self, record: RoundRecord, state: RoundState) -> None:
        """The whole round state (strategy, transforms, influence window) in one transaction."""
        self.store.save_round(record, state)

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        metrics: dict[str, Any] = {
            "round": record.round,
            "participants": record.participants,
            "failed": record.failed,
            "train_loss": record.train_loss,
            "test_accuracy": record.test_accuracy,
            "wall_s": record.wall_s,
        }
        if "relay_sums" in record.extra:
            metrics["relay_sums"] = record.extra["relay_sums"]
        self.svc.record_round(metrics)
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
            raise StopRun(STOPPED_BY_SIGNAL)


@dataclass
class Served:
    """What :func:`serve` leaves: this process's result, every round of the run, and the run folder."""

    result: RunResult
    history: History
    run_id: str
    built: Federation
    output: Path | None = None


class StopServing(BaseException):
    """A stop was requested (SIGTERM) before or between rounds; the store holds the last completed round.

    A :class:`BaseException`, so that no ``except Exception`` on the way swallows it.
    """


OutputChoice = Path | Literal["default"] | None


@dataclass
class Prepared:
    """The run :func:`prepare` opened: its experiment, store and id, checkpoint and security notes."""

    exp: Experiment
    store: Store
    run_id: str
    state: StrategyState | None
    """The last checkpoint; None for a new run, or a resumed one that had no round done."""
    notes: list[str]
    finished: str | None = None
    """Set when the resumed run had already ended: why (its nodes are only told that it is over)."""


def prepare(exp: Experiment, cfg: DeployConfig, *, resume: bool, downgrade_security: bool = False) -> Prepared:
    """Open the store; on resume, check all of it, then take the run's config, security settings and checkpoint.

    A damaged store is a one-line :class:`DataError` naming the file, raised here, before
    any data is loaded or any node served. The security notes are warnings to show (see
    :mod:`fedge.deploy.security`).
    """
    if not resume:
        store = Store(cfg.state)
        try:
            return _new_run(store, exp, cfg)
        except BaseException:
            store.close()
            raise
    store, opened = Store.open(cfg.state)
    try:
        return _open_run(store, opened, exp, cfg, downgrade_security=downgrade_security)
    except BaseException:
        store.close()
        raise


def _new_run(store: Store, exp: Experiment, cfg: DeployConfig) -> Prepared:
    run_id = store.meta("run_id")
    if run_id is not None:
        raise ConfigError(f"{cfg.state} already holds run {run_id}; pass --resume or use another state file")
    kept = security.record(cfg)
    run_id = uuid.uuid4().hex[:12]
    store.set_meta(run_id=run_id, config=stored_config(exp))
    store.set_security(kept)
    return Prepared(exp, store, run_id, None, [])


def stored_config(exp: Experiment) -> str:
    """The config a state database keeps: no dashboard token and no tracking credentials.

    A resume takes its dashboard from the command line (a fresh one-time login) and its
    tracking credentials from MLflow's environment (``MLFLOW_TRACKING_USERNAME``,
    ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``).
    """
    from fedge.report.config import without_secrets

    return to_toml(without_secrets(exp), commented=False)


def _open_run(
    store: Store, opened: Opened, exp: Experiment, cfg: DeployConfig, *, downgrade_security: bool
) -> Prepared:
    try:
        stored = from_dict(opened.config)
    except ConfigError as exc:
        raise DataError(f"{cfg.state}: damaged state database: the stored config is refused ({exc})") from None
    stored.extensions["deploy"] = cfg
    previous = store.security()
    notes = security.restore(cfg, previous or {}, downgrade=downgrade_security)
    if previous is None:
        notes.append(f"{cfg.state} holds no security settings (an older fedge made it); using the command line's")
    done = 0 if opened.state is None else opened.state.round_num
    finished = opened.finished or (f"all {stored.rounds} rounds done" if done >= stored.rounds else None)
    if opened.state is None:
        log.info(
            "event=resume run=%s state=%s: no round checkpointed yet, starting from round 1", opened.run_id, cfg.state
        )
    store.set_security(security.merged(previous or {}, security.record(cfg)))
    return Prepared(stored, store, opened.run_id, opened.state, notes, finished)


CLIENT_SECTIONS = ("privacy", "compression", "secagg", "personalization", "async")
"""The extension sections a node's side of a round reads (clipping and local noise, the update
codec, masking, the personal model's hyperparameters: Ditto's λ, FedRep's head; under ``[async]``
a masking node holds its input unencoded until its buffer's session sends its staleness weight). Nothing else
is sent: ``[deploy]`` names the server's key files, ``[dashboard]`` holds its token, and a node
need not have the extras of server-only sections."""


def node_experiment(exp: Experiment, num_classes: int) -> Experiment:
    """The experiment as nodes receive it: the model's output size fixed, since a node sees only its own labels.

    The server's own paths are blanked: its ``output`` folder, ``data.path`` and a local
    ``data.hf_name`` name the server's disk and mean nothing on a device, which brings its
    own data (``fedge join --data``) or its own loader.
    """
    data = exp.data
    hf_name = "" if _local_path(data.hf_name) else data.hf_name
    return dataclasses.replace(
        exp,
        output=Experiment().output,
        data=dataclasses.replace(data, path="", hf_name=hf_name),
        model=dataclasses.replace(exp.model, num_classes=exp.model.num_classes or num_classes),
    )


def _local_path(name: str) -> bool:
    """Whether a ``data.hf_name`` is a file or folder of the server rather than a hub name."""
    p = Path(name)
    return bool(name) and (p.is_absolute() or name.startswith((".", "~")) or bool(p.suffix) or p.exists())


def node_sections(exp: Experiment) -> list[str]:
    """The client-side sections this run's nodes need; ``[privacy]`` only when it acts on the node."""
    names = [n for n in CLIENT_SECTIONS if n in exp.extensions]
    if "privacy" in names:
        p = exp.section("privacy")
        if p.mode == "off" or (p.mode == "central" and p.clip_at == "server"):
            names.remove("privacy")  # noise, clipping and accounting all happen on the server
    return names


def node_config(exp: Experiment, num_classes: int) -> str:
    """The TOML a node receives: the core sections and the client-side sections it needs.

    A node therefore needs only the extras of what it runs (``fedge[client]`` for a NumPy
    model without local DP), and no server secret ever reaches it.
    """
    return to_toml(node_experiment(exp, num_classes), commented=False, only=node_sections(exp))


def serve(
    exp: Experiment,
    *,
    resume: bool = False,
    on_ready: Callable[[int], None] | None = None,
    transport_hook: Callable[[GrpcTransport], None] | None = None,
    linger_s: float | None = None,
    downgrade_security: bool = False,
    on_warning: Callable[[str], None] | None = None,
    output: OutputChoice = None,
    overwrite: bool = False,
) -> Served:
    """Run the whole federation; returns this process's result and the history of all rounds.

    ``output`` is where the run folder of a finished run goes (the folder ``fedge run``
    writes, by the same rules: :func:`fedge.experiment.claim_run_folder`): a path,
    ``"default"`` for the experiment's ``output`` template, or None for none. It is claimed
    before the server starts, so an unusable location fails first. Security warnings (no
    allow-list, no TLS, a resume that changes them) go to ``on_warning`` (default: the
    log). A requested stop while waiting for nodes raises :class:`StopServing`.
    """
    from fedge.experiment import claim_run_folder, write_run_files
    from fedge.federation import build
    from fedge.preflight import check_extras

    t0 = time.perf_counter()
    warn = on_warning or log.warning
    cfg: DeployConfig = exp.section("deploy")
    run = prepare(exp, cfg, resume=resume, downgrade_security=downgrade_security)
    exp, store = run.exp, run.store
    folder = None
    try:
        check_extras(exp)
        check_relay_privacy(exp, cfg)
        if output is not None and run.finished is None:
            folder = claim_run_folder(exp, None if output == "default" else output, overwrite=overwrite)
        for note in [*run.notes, *security.startup_warnings(cfg)]:
            warn(note)
        built = build(exp, deployed=True)
        keep_noise_secret(built, store)
        result = _run_served(built, cfg, store, run.run_id, run.state, on_ready, transport_hook, linger_s, run.finished)
        history = History(store.records())
        out = None
        if folder is not None and result.stopped_early != STOPPED_BY_SIGNAL:
            whole = dataclasses.replace(result, history=history)
            write_run_files(built, whole, folder.tmp, time.perf_counter() - t0)
            out = folder.commit()
        elif folder is not None:
            folder.discard()
    except BaseException:
        if folder is not None:
            folder.discard()
        raise
    finally:
        store.close()
    return Served(result, history, run.run_id, built, out)


def keep_noise_secret(built: Federation, store: Store) -> None:
    """Draw central DP's noise from a secret of this server, not from the run's seed.

    Every node's config carries the seed, so noise drawn from it could be regenerated and taken
    off the released model. The secret (128 random bits) is made on the run's first start and
    kept in the server's state file, so a resumed run draws the noise the uninterrupted run
    would have; it is never sent to a node, written to the run folder or shown in a status.
    """
    central = built.pipeline.named("central_dp")
    if not central:
        return
    key = store.meta("dp_noise_key")
    if key is None:
        key = str(secrets.randbits(128))
        store.set_meta(dp_noise_key=key)
    for t in central:
        t.noise_key = int(key)


def check_relay_privacy(exp: Experiment, cfg: DeployConfig) -> None:
    """Refuse, before round 1, central DP that a relay of the allow-list could not take part in.

    Under central DP with relays each child clips its own update and its relay clips it again
    (:func:`fedge.deploy.transport.check_private_partial`): the server never sees the children's
    updates, so it can neither clip them nor count their clipping bits.
    """
    p = exp.extensions.get("privacy")
    if getattr(p, "mode", "off") != "central" or not cfg.allow_list:
        return
    path = Path(cfg.allow_list)
    if not path.is_file() or not parse_relays(path.read_text(encoding="utf-8"), str(path)):
        return
    if getattr(p, "clip_at", "server") != "client":
        raise ConfigError(
            f"{path} lists relays, whose sums this server cannot clip: central DP with relays needs "
            "privacy.clip_at = 'client' (children clip, their relay clips again)"
        )
    if getattr(p, "adaptive_clip", False):
        raise ConfigError(
            f"{path} lists relays: privacy.adaptive_clip counts each client's clipping bit on this server, "
            "which a relay's sum does not carry; turn it off"
        )


def _classes(built: Federation, svc: FedgeService) -> Classes | None:
    """How a served round splits its clients by the part of the model each holds (None: all hold the
    whole model); a HeteroFL node that declared a device profile gets the width that profile fits."""
    from fedge.personalization import declared_widths

    strategy = built.strategy
    if not strategy.per_client_models:
        return None
    declared = None if built.data is None else declared_widths(built.config, built.data, strategy)

    def split(params: Params, client_ids: Sequence[int]) -> list[ModelClass] | None:
        if declared is not None:
            for node in svc.status().nodes:
                if node.profile:
                    declared(node.client_id, node.profile)
        return model_classes(strategy, params, client_ids)

    return split


def deploy_service(
    cfg: DeployConfig,
    store: Store,
    *,
    run_id: str,
    config_toml: str,
    num_clients: int,
    rounds: int,
    first_client: int = 0,
    min_nodes: int | None = None,
) -> FedgeService:
    """The service ``[deploy]`` describes (allow-list, limits, timing), for ``fedge serve`` and ``fedge relay``;
    ``min_nodes`` overrides ``[deploy] min_nodes``."""
    return FedgeService(
        store=store,
        verifier=Verifier(
            Path(cfg.allow_list) if cfg.allow_list else None,
            Path(cfg.revoked) if cfg.revoked else None,
            window_s=cfg.window_s,
        ),
        run_id=run_id,
        config_toml=config_toml,
        num_clients=num_clients,
        first_client=first_client,
        rounds=rounds,
        min_nodes=cfg.min_nodes if min_nodes is None else min_nodes,
        heartbeat_s=cfg.heartbeat_s,
        node_timeout_s=cfg.node_timeout_s,
        chunk_size=cfg.chunk_kib * 1024,
        max_update_bytes=int(cfg.max_update_mib * 2**20),
        max_decoding=cfg.max_decoding,
        max_inflight_bytes=int(cfg.max_inflight_mib * 2**20),
    )


def deploy_transport(cfg: DeployConfig, svc: FedgeService, *, classes: Classes | None = None) -> GrpcTransport:
    """The round transport over ``svc`` with ``[deploy]``'s waits and deadlines."""
    return GrpcTransport(
        svc,
        wait_s=cfg.wait_s,
        round_deadline_s=cfg.round_deadline_s,
        round_min_nodes=cfg.round_min_nodes,
        secagg_stage_s=cfg.secagg_stage_s,
        classes=classes,
    )


def _run_served(
    built: Federation,
    cfg: DeployConfig,
    store: Store,
    run_id: str,
    state: StrategyState | None,
    on_ready: Callable[[int], None] | None,
    transport_hook: Callable[[GrpcTransport], None] | None,
    linger_s: float | None,
    finished: str | None = None,
) -> RunResult:
    """Serve the rounds left; a run that had already ended (``finished``) only tells its nodes so."""
    exp = built.config
    svc = deploy_service(
        cfg,
        store,
        run_id=run_id,
        config_toml=node_config(exp, built.dataset.num_classes),
        num_clients=built.ctx.population,
        rounds=exp.rounds,
    )
    tree: Any = exp.extensions.get("hierarchy")
    if getattr(tree, "enabled", False):  # the simulation's [hierarchy], served by `fedge relay` processes
        svc.fanout, svc.kappa1 = int(tree.zones_per_vehicle), int(tree.kappa1)
    transport = deploy_transport(cfg, svc, classes=_classes(built, svc))
    if transport_hook is not None:
        transport_hook(transport)
    if finished is not None and state is not None:
        svc.round_num = state.round_num
        svc.phase = "finished"
        transport.close()
    server, port = start_grpc(svc, cfg)
    try:
        log.info(
            "event=listening address=%s:%d run=%s from_round=%d",
            cfg.host,
            port,
            run_id,
            0 if state is None else state.round_num,
        )
        if on_ready is not None:
            on_ready(port)
        if finished is not None and state is not None:
            window = max(cfg.node_timeout_s, 2 * Backoff().max_s) if linger_s is None else linger_s
            return _tell_finished(svc, transport, state, finished, window)
        result = _loop(built, transport, store, svc, state)
        if result.stopped_early != STOPPED_BY_SIGNAL:
            store.set_finished(result.stopped_early or f"all {exp.rounds} rounds done")
            svc.phase = "finished"
            transport.close()
            _linger(svc, cfg.heartbeat_s * 2 if linger_s is None else linger_s)
        else:
            svc.phase = "stopped"
            log.info("event=stopped round=%d reason=%r", result.state.round_num, result.stopped_early)
        return result
    finally:
        server.stop(grace=1.0).wait()
        svc.refusals.close()


def _tell_finished(
    svc: FedgeService, transport: GrpcTransport, state: StrategyState, why: str, seconds: float
) -> RunResult:
    """A resumed run that had already ended: answer STOP to the nodes that come back, then return.

    Nodes of a server that went away retry with backoff, so the server waits ``seconds``
    (by default a node timeout, and at least two of a node's longest retry waits) for them,
    then as long as a node it told is still polling.
    """
    log.info("event=already_finished run=%s round=%d reason=%r", svc.run_id, state.round_num, why)
    transport.stopping.wait(seconds)
    _linger(svc, svc.heartbeat_s * 2)
    return RunResult(
        history=History(svc.store.records()),
        state=state,
        stopped_early=f"the run was already finished ({why}); its nodes were told to stop",
    )


def _loop(
    built: Federation, transport: GrpcTransport, store: Store, svc: FedgeService, state: StrategyState | None
) -> RunResult:
    """The federation's rounds over the gRPC transport, checkpointing every round (its whole RoundState)."""
    resume = None if state is None else store.round_state(state)
    influence = InfluenceBound(influence_limits(built.config))
    try:
        return built.run(
            transport,
            callbacks=[_Checkpoint(store, svc, transport)],
            state=resume,
            influence=influence,
        )
    except TransportError as exc:
        if transport.stopping.is_set():
            raise StopServing(str(exc)) from None
        raise


def influence_limits(exp: Experiment) -> InfluenceLimits:
    """A deployed run's bounds on one node's weight and norm; a set ``max_update_norm`` replaces the norm bound."""
    cfg: DeployConfig = exp.section("deploy")
    return InfluenceLimits(cfg.examples_cap, 0.0 if exp.training.max_update_norm else cfg.norm_cap)


def _linger(svc: FedgeService, seconds: float) -> None:
    """Keep answering polls briefly so connected nodes hear that the run is over."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(n.connected for n in svc.status().nodes):
        time.sleep(0.05)


def experiment_for(path: Path | None, overrides: dict[str, Any], settings: Sequence[str] = ()) -> Experiment:
    """Load an experiment file, apply ``--set KEY=VALUE`` settings, then the ``[deploy]`` command-line options."""
    from fedge.config import load
    from fedge.config.overrides import apply_overrides

    exp = apply_overrides(load(str(path)) if path else Experiment(), settings)
    cfg: DeployConfig = exp.section("deploy")
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    return exp

"""``fedge relay``: one process that is a node to its parent and a server to its children.

A tier of a hierarchical federation (HierFAVG: Liu, Zhang, Song and Letaief, "Client-Edge-Cloud
Hierarchical Federated Learning", IEEE ICC 2020) over gRPC: a vehicle's gateway between its
zonal ECUs and the cloud, or a zonal ECU between its sensors and the gateway. Upward it is a
:class:`~fedge.deploy.node.Node` with its own Ed25519 key, which the parent's allow-list marks
``relay=N``: the parent gives it a block of ``N`` consecutive client ids and takes one partial
sum for them. Downward it is a server like ``fedge serve`` — its own TLS key, its own
allow-list of child keys, its own SQLite state — whose children join it as they would a server
and get client ids from its block.

On each parent TRAIN the relay runs ``kappa1`` edge steps with the selected children that are
connected: the simulation's relay (:meth:`fedge.hierarchy.HierarchyBackend.edge_round`, the
same re-basing and reducer) over this relay's :class:`~fedge.deploy.transport.GrpcTransport`,
one child round per edge step. It then Pushes the parent ONE :class:`~fedge.engine.aggregator.PartialSum`:
the strategy's named terms summed over its children, their example count and their reported
metrics — never a child's update. A relay's children may be relays themselves (any depth).
With ``secagg`` (``--secagg``, ``kappa1 = 1``) the children mask their updates and the relay runs
SecAgg+ among them through its own transport, so it learns only their sum. Under a parent with
``[secagg]`` the relay is one participant of the parent's SecAgg+ session: it Pushes its ids,
example count and metrics without terms, and its terms go into the session masked, encoded as
one input for its whole block (:meth:`~fedge.secagg.SecureAggregation.encode_block`; with
``--secagg`` too, the exact ring total of its children's session), so the parent learns only the
sum over its participants. See ``docs/deployment.md`` ("Relays") and ``docs/secagg.md``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, cast

import numpy as np

from fedge.core.errors import ConfigError, FedgeError, TransportError
from fedge.core.params import ParamSpec
from fedge.core.types import ClientUpdate, EvalResult, FitInstructions, client_rng
from fedge.deploy.auth import Signer
from fedge.deploy.config import DeployConfig
from fedge.deploy.node import EDGE_STEP, Backoff, Node, decode_instructions, load_experiment
from fedge.deploy.server import GrpcServer, deploy_service, deploy_transport, start_grpc
from fedge.deploy.service import FedgeService
from fedge.deploy.store import Store
from fedge.deploy.transport import GrpcTransport
from fedge.engine.aggregator import Aggregator, ClientFailure, PartialSum
from fedge.pipeline import Pipeline, RoundContext
from fedge.strategies.base import Strategy
from fedge.strategies.influence import InfluenceBound, InfluenceLimits
from fedge.transport.base import FitResult
from fedge.transport.inprocess import ClientRuntime, FitTask

log = logging.getLogger("fedge.deploy.relay")
BLOCK_STREAM = 0x5EC
"""The generator stream of a relay's fixed-point rounding of its block's sum, ``client_rng(seed, round, first, it)``."""


class GrpcBackend:
    """A relay's children as an execution backend: each call is one round of the relay's transport.

    The edge step ``k`` of the simulation's relay (its client runtime's ``step``) travels to the
    children in the instructions (:data:`~fedge.deploy.node.EDGE_STEP`), so each trains with the
    generator a simulated child of that step has.
    """

    name = "grpc"

    def __init__(self, transport: GrpcTransport) -> None:
        self.transport = transport

    def fit(self, task: FitTask) -> Iterator[FitResult]:
        step = int(getattr(task.runtime, "step", 0))
        ins = task.ins if step == 0 else replace(task.ins, config={**task.ins.config, EDGE_STEP: step})
        yield from self.transport.fit(task.round_num, task.client_ids, task.params, ins, task.reducer)

    def close(self) -> None:
        pass


def _remote(cid: int) -> Any:
    raise TransportError(f"client {cid} trains on its own device, not in the relay")


def masked_config(config_toml: str, enabled: bool = True) -> str:
    """The run's config as a relay's children get it: ``[secagg]`` turned on under ``--secagg``, off for
    the clear children of a relay whose parent masks (the relay then masks their sum itself)."""
    import tomllib

    from fedge.config.schema import CORE_SECTIONS, from_dict, to_toml

    raw = tomllib.loads(config_toml)
    raw.setdefault("secagg", {})["enabled"] = enabled
    sections = [k for k, v in raw.items() if isinstance(v, dict) and k not in CORE_SECTIONS]
    return to_toml(from_dict(raw), commented=False, only=sections)


def clipped_at_relay(pipeline: Pipeline) -> Pipeline:
    """The relay's pipeline for its children's updates: under central DP (``clip_at = "client"``)
    the relay clips each child's update to ``C`` again before summing, so its sum is what the
    parent checks (weight one per child, L2 norm at most ``n C``) even if a child did not clip."""
    if not pipeline.named("central_dp"):
        return pipeline
    return Pipeline(
        [
            replace(cast(Any, t), clip_at="server", accountant=None, adaptive=None) if t.name == "central_dp" else t
            for t in pipeline.transforms
        ]
    )


def parent_secagg(exp: Any) -> Any:
    """The parent's secure aggregation transform (the relay's input is encoded with its ring and scale), or
    None when the parent's config has no ``[secagg]`` on."""
    if not getattr(exp.extensions.get("secagg"), "enabled", False):
        return None
    from fedge.federation import client_side
    from fedge.transport.exchange import CohortSum

    _, pipeline = client_side(exp)
    return next((t for t in pipeline.transforms if isinstance(t, CohortSum)), None)


def terms_tree(item: PartialSum, *, masked: bool = False) -> dict[str, Any]:
    """What a relay Pushes its parent: the partial sum's terms, ids, example count, metrics, failures.

    ``masked`` (a parent with ``[secagg]``): everything but the terms, which go to the parent only
    masked, in its secure aggregation session."""
    head: dict[str, Any] = (
        {"masked": True}
        if masked
        else {"terms": {k: [np.asarray(t, dtype=np.float64) for t in v] for k, v in item.terms.items()}}
    )
    return {
        **head,
        "client_ids": [int(c) for c in item.client_ids],
        "num_examples": int(item.num_examples),
        "metrics": [{k: float(v) for k, v in m.items()} for m in item.metrics],
        "failures": [[int(f.client_id), f.stage, f.reason[:300]] for f in item.failures],
    }


class Relay:
    """The child-facing server of a relay, built once its parent has said which client ids it serves.

    ``cfg`` is the child-facing ``[deploy]`` section (address, TLS, allow-list of child keys,
    state file, deadlines); ``kappa1`` the edge steps per parent round. With ``secagg`` the
    children mask their updates (the run's config reaches them with ``[secagg]`` on) and the
    relay runs SecAgg+ among them through its own transport, so it learns only their sum.
    ``up`` is the parent's secure aggregation when the parent runs ``[secagg]`` (None otherwise):
    the relay's sum then reaches the parent only as its masked input (:meth:`parent_input`).
    """

    def __init__(
        self,
        cfg: DeployConfig,
        kappa1: int | None,
        on_ready: Callable[[int], None] | None = None,
        *,
        secagg: bool = False,
    ) -> None:
        if kappa1 is not None and kappa1 < 1:
            raise ConfigError(f"--kappa1 must be >= 1, got {kappa1}")
        if secagg and (kappa1 or 1) > 1:
            raise ConfigError(
                "fedge relay --secagg runs with --kappa1 1: between edge steps the relay would need its "
                "children's individual updates, which masking hides"
            )
        self.cfg, self.kappa1, self.on_ready, self.secagg = cfg, kappa1, on_ready, secagg
        self.store = Store(cfg.state)
        self.svc: FedgeService | None = None
        self.transport: GrpcTransport | None = None
        self.server: GrpcServer | None = None
        self.port = 0
        self.rounds_relayed = 0
        """Parent rounds this process relayed (the last one of the relay's life is the store's ``last_round``)."""
        self._bound: InfluenceBound | None = None
        self._experiment: Any = None
        self.up: Any = None
        self._seed = self._first = 0
        self._block_words: tuple[int, Any] | None = None
        """(round, ring total) of the children's session under ``--secagg``: the block's input, exactly."""

    # -- the parent's word --------------------------------------------------------
    def start(self, first: int, clients: int, parent_run: str, config_toml: str) -> None:
        """Serve client ids ``first .. first + clients - 1`` to the children (on the first join; a
        rejoin only checks that the parent still gives this relay the same block)."""
        block = f"{first}+{clients}"
        stored = self.store.meta("block")
        if stored is not None and stored != block:
            raise ConfigError(
                f"{self.cfg.state} holds a relay of client ids {stored.replace('+', ' (+')}), the parent now "
                f"gives {first} (+{clients}): start this relay with a new --state"
            )
        exp = load_experiment(config_toml)
        self.up, self._seed, self._first = parent_secagg(exp), exp.seed, first
        if self.secagg or self.up is not None:
            config_toml = masked_config(config_toml, enabled=self.secagg)
            exp = load_experiment(config_toml)
        self._check_steps(self.kappa1 or 1, exp, "fedge relay --kappa1")
        if self.svc is not None:
            self.svc.config_toml = config_toml
            self._experiment = exp
            return
        run_id = self.store.meta("run_id") or uuid.uuid4().hex[:12]
        self.store.set_meta(run_id=run_id, block=block, parent_run=parent_run)
        cfg = self.cfg
        self._experiment = exp
        self.svc = deploy_service(
            cfg,
            self.store,
            run_id=run_id,
            config_toml=config_toml,
            num_clients=clients,
            first_client=first,
            rounds=exp.rounds,
            min_nodes=min(cfg.min_nodes, clients),
        )
        self.transport = deploy_transport(cfg, self.svc)
        limits = InfluenceLimits(cfg.examples_cap, 0.0 if exp.training.max_update_norm else cfg.norm_cap)
        self._bound = InfluenceBound(limits) if (limits.examples_factor or limits.norm_factor) else None
        self.server, self.port = start_grpc(self.svc, cfg)
        log.info("event=relay_listening address=%s:%d clients=%d..%d", cfg.host, self.port, first, first + clients - 1)
        if self.on_ready is not None:
            self.on_ready(self.port)

    def steps(self, asked: int | None) -> int:
        """The edge steps of a parent round: those the parent asks for (its ``[hierarchy] kappa1``),
        which a ``--kappa1`` given to this relay must agree with; else ``--kappa1``, else 1."""
        if asked is None:
            return self.kappa1 or 1
        if asked < 1 or (self.kappa1 is not None and asked != self.kappa1):
            raise ConfigError(
                f"the parent's [hierarchy] asks for kappa1 = {asked} edge steps, this relay was started with "
                f"--kappa1 {self.kappa1}: start it without --kappa1"
            )
        self._check_steps(asked, self._experiment, "the parent's [hierarchy] kappa1")
        return asked

    def _check_steps(self, steps: int, exp: Any, who: str) -> None:
        """Refuse ``steps`` > 1 edge steps (asked by ``who``) where they cannot run: under ``--secagg``
        (the relay would need each child's update between steps) or with ``[privacy]`` (each child's
        update would be released ``steps`` times per parent round, the accountant counts one)."""
        if steps <= 1:
            return
        if self.secagg:
            raise ConfigError(f"{who} = {steps} edge steps does not run with --secagg; use 1")
        if getattr(exp.extensions.get("privacy"), "mode", "off") != "off":
            raise ConfigError(
                f"{who} = {steps} does not run with [privacy]: each child's update would be released {steps} "
                "times per parent round, which the accountant does not count (it counts one per round); use 1"
            )

    def edge_round(
        self, params: Any, ins: FitInstructions, cohort: list[int], kappa1: int | None = None
    ) -> PartialSum | list[ClientFailure]:
        """``kappa1`` edge steps (:meth:`steps`) with the cohort's connected children: their one
        partial sum, or why there is none."""
        from fedge.engine.rounds import round_rng
        from fedge.federation import client_side
        from fedge.hierarchy.relays import HierarchyBackend, Topology
        from fedge.transport.exchange import CohortSum

        svc, transport, exp = self.svc, self.transport, self._experiment
        assert svc is not None and transport is not None
        steps = self.steps(kappa1)
        try:
            live = set(transport.available(ins.round_num))
        except TransportError as exc:
            return [ClientFailure(c, "fit", f"relay: {exc}") for c in cohort]
        chosen = [c for c in cohort if c in live]
        missing = [ClientFailure(c, "fit", "not connected to its relay") for c in cohort if c not in live]
        if not chosen:
            return missing
        strategy: Strategy
        strategy, pipeline = client_side(exp)
        spec = ParamSpec.of(params)
        norm = exp.training.max_update_norm or None
        aggregator = Aggregator.for_run(strategy, pipeline, spec, max_update_norm=norm, bound=self._bound)
        rctx = RoundContext(
            round_num=ins.round_num, rng=round_rng(exp.seed, ins.round_num), spec=spec, num_sampled=len(chosen)
        )
        failures = list(missing)
        cohort_sum = next((t for t in pipeline.transforms if isinstance(t, CohortSum)), None)
        if cohort_sum is not None:
            return self._masked_round(cohort_sum, pipeline, rctx, params, ins, chosen, failures)
        pipeline = clipped_at_relay(pipeline)
        runtime = ClientRuntime(_remote, strategy, pipeline, exp.seed)
        backend = HierarchyBackend(GrpcBackend(transport), Topology(len(chosen), len(chosen)), steps)
        task = FitTask(runtime, ins.round_num, chosen, params, ins, {}, aggregator.reducer(rctx, len(chosen)))
        for item in backend.edge_round(task):
            if isinstance(item, PartialSum):
                item.failures = failures + item.failures
                return item
            if isinstance(item, ClientFailure):
                failures.append(item)
        return failures

    def _masked_round(
        self,
        cohort_sum: Any,
        pipeline: Any,
        rctx: RoundContext,
        params: Any,
        ins: FitInstructions,
        chosen: list[int],
        failures: list[ClientFailure],
    ) -> PartialSum | list[ClientFailure]:
        """One child round under SecAgg+: the masked updates, then the protocol's stages through this
        relay's transport (the same orchestrator ``fedge serve`` runs); the survivors' sum."""
        from fedge.core.errors import AggregationError

        assert self.transport is not None
        updates: list[ClientUpdate] = []
        metrics: dict[int, list[dict[str, float]]] = {}
        blocks: dict[int, list[int]] = {}
        """A child relay's participant id -> its client ids (its input, masked, sums them)."""
        for item in self.transport.fit(ins.round_num, chosen, params, ins, None):
            if isinstance(item, ClientFailure):
                failures.append(item)
            elif isinstance(item, PartialSum) and item.masked_by is not None:
                updates.append(item.participant())
                blocks[item.masked_by] = list(item.client_ids)
                metrics[item.masked_by] = list(item.metrics)
                failures += item.failures
            elif isinstance(item, ClientUpdate):
                updates.append(pipeline.server(item, rctx))
                metrics[item.client_id] = [
                    {**item.metrics, "num_examples": float(item.num_examples), "uplink_bytes": float(item.uplink_bytes)}
                ]
        try:
            words, included, lost = cohort_sum.sum_words(updates, rctx, self.transport)
        except AggregationError as exc:
            return failures + [
                ClientFailure(c, "secagg", str(exc)) for u in updates for c in blocks.get(u.client_id, [u.client_id])
            ]
        summed = set(included)
        failures += [
            ClientFailure(c, "secagg", reason)
            for reason, ids in lost.items()
            for p in ids
            if p not in summed  # lost at the unmask stage, after its input was in: it counts
            for c in blocks.get(p, [p])
        ]
        kept = [u for u in updates if u.client_id in summed]
        if not kept:
            return failures
        up = self.up
        if up is not None and (up.scale, up.cfg.bits, up.max_weight) == (
            cohort_sum.scale,
            cohort_sum.cfg.bits,
            cohort_sum.max_weight,
        ):
            self._block_words = (ins.round_num, words)
        return PartialSum(
            terms=cohort_sum.decode(words, rctx.spec),
            client_ids=[c for u in kept for c in blocks.get(u.client_id, [u.client_id])],
            num_examples=int(sum(u.num_examples for u in kept)),
            metrics=[m for u in kept for m in metrics[u.client_id]],
            failures=failures,
        )

    def parent_input(self, item: PartialSum, round_num: int) -> Any:
        """The block's input for the parent's secure aggregation: under ``--secagg`` the exact ring total of
        the children's session (same ring and scale), else ``item``'s terms encoded as one block of its clients."""
        assert self.up is not None
        held, self._block_words = self._block_words, None
        if held is not None and held[0] == round_num:
            return held[1]
        rng = client_rng(self._seed, round_num, self._first, BLOCK_STREAM)
        return self.up.encode_block(item.terms, len(item.client_ids), rng)

    def evaluate(self, params: Any, round_num: int, cohort: list[int]) -> EvalResult | None:
        """The connected cohort's evaluation of ``params``, as one example-weighted result (None: none answered)."""
        assert self.svc is not None and self.transport is not None
        live = set(self.svc.connected())
        chosen = [c for c in cohort if c in live]
        got = [r for r in self.transport.evaluate(round_num, chosen, params) if isinstance(r, EvalResult)]
        n = sum(r.num_examples for r in got)
        if not got or n <= 0:
            return None
        return EvalResult(
            chosen[0],
            n,
            sum(r.loss * r.num_examples for r in got) / n,
            sum(r.accuracy * r.num_examples for r in got) / n,
            {},
        )

    def relayed(self, round_num: int) -> None:
        self.rounds_relayed += 1
        self.store.set_meta(last_round=str(round_num))

    def close(self, linger_s: float = 1.0) -> None:
        """Tell the children the run is over (when it is), stop serving them, close the state file."""
        if self.transport is not None:
            self.transport.close()
        if self.svc is not None:
            end = time.monotonic() + linger_s
            while time.monotonic() < end and any(n.connected for n in self.svc.status().nodes):
                time.sleep(0.05)
        if self.server is not None:
            self.server.stop(grace=0.5).wait()
        if self.svc is not None:
            self.svc.refusals.close()
        self.store.close()


class RelayNode(Node):
    """The relay's side towards its parent: a :class:`Node` whose training is its children's edge steps."""

    def __init__(self, parent: str, signer: Signer, relay: Relay, **kw: Any) -> None:
        super().__init__(parent, signer, **kw)
        self.relay = relay

    def joined(self, rep: Any) -> None:
        if rep.clients < 1:
            raise TransportError(
                f"the parent {self.server} takes node {self.signer.node_id} as a plain node: mark its key "
                "relay=N (N = the clients it serves) in the parent's allow-list"
            )
        self.exp = load_experiment(rep.config_toml)
        self.first, self.clients = int(rep.client_id), int(rep.clients)
        self.relay.start(self.first, self.clients, rep.run_id, rep.config_toml)
        self.pipeline = Pipeline([] if self.relay.up is None else [self.relay.up])
        """Answers the parent's secure aggregation stages (:meth:`Node.secagg`) when the parent masks."""

    def _cohort(self, tree: Any) -> list[int]:
        block = range(self.first, self.first + self.clients)
        ids = tree.get("cohort") if isinstance(tree, dict) else None
        return [int(c) for c in ids if int(c) in block] if isinstance(ids, list) else list(block)

    def train(self, reply: Any) -> None:
        try:
            tree = self.fetch(reply)
            params, ins = decode_instructions(tree)
        except (TransportError, ValueError, TypeError) as exc:
            log.warning("event=task_lost round=%d reason=%r", reply.round, str(exc))
            return
        out, error = None, ""
        self._exchange_state, self._secagg_sent = {}, None
        try:
            asked = tree.get("kappa1") if isinstance(tree, dict) else None
            got = self.relay.edge_round(params, ins, self._cohort(tree), asked if isinstance(asked, int) else None)
            if isinstance(got, PartialSum) and self.relay.up is not None:
                from fedge.secagg.client import hold_input

                # The parent masks: the block's words wait here for its session, like a node's own.
                hold_input(self._exchange_state, ins.round_num, self.relay.parent_input(got, ins.round_num))
        except (FedgeError, ValueError) as exc:
            got, error = [], f"{type(exc).__name__}: {exc}"
        if isinstance(got, PartialSum):
            out = terms_tree(got, masked=self.relay.up is not None)
        elif not error:
            why = "; ".join(sorted({f"{f.stage}: {f.reason}" for f in got})) or "no child selected"
            error = f"no child of relay {self.signer.node_id} delivered ({why[:250]})"
        rep = self._push(reply, ins.round_num, out, error)
        if rep is None:
            return
        if rep.accepted and not error:
            self.rounds_trained += 1
            self.relay.relayed(ins.round_num)
        log.info("event=relayed round=%d accepted=%s reason=%r", ins.round_num, rep.accepted, rep.reason)

    def evaluate(self, reply: Any) -> None:
        try:
            tree = self.fetch(reply)
            if not isinstance(tree, dict) or not isinstance(tree.get("params"), list):
                raise TransportError("evaluation task is not a map with params")
            params = [np.asarray(p, dtype=np.float32) for p in tree["params"]]
        except TransportError as exc:
            log.warning("event=task_lost round=%d reason=%r", reply.round, str(exc))
            return
        r = self.relay.evaluate(params, int(reply.round), self._cohort(tree))
        result = (
            None
            if r is None
            else {
                "num_examples": int(r.num_examples),
                "loss": float(r.loss),
                "accuracy": float(r.accuracy),
                "metrics": {},
            }
        )
        self._push(reply, int(reply.round), result, "" if r is not None else "no child of this relay evaluated")


def run_relay(
    parent: str,
    signer: Signer,
    cfg: DeployConfig,
    *,
    kappa1: int | None = None,
    partition: int = -1,
    root_ca: bytes | None = None,
    cert_chain: tuple[bytes, bytes] | None = None,
    insecure: bool = False,
    backoff: Backoff | None = None,
    on_ready: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    secagg: bool = False,
) -> int:
    """Relay between ``parent`` and this relay's children until the parent's run ends; the rounds relayed.

    A parent that goes away is rejoined with backoff while the children stay connected (they
    wait); a restarted relay (same ``cfg.state``) keeps its children's client ids.
    """
    from fedge.deploy.security import check_plaintext

    check_plaintext(cfg)
    relay = Relay(cfg, kappa1, on_ready, secagg=secagg)
    node = RelayNode(
        parent,
        signer,
        relay,
        partition=partition,
        root_ca=root_ca,
        cert_chain=cert_chain,
        insecure=insecure,
        backoff=backoff,
    )
    watcher = None
    if stop is not None:

        def watch() -> None:
            stop.wait()
            node.stop()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    finished = False
    try:
        node.run()
        finished = stop is None or not stop.is_set()  # the parent said stop, not this process's owner
        return relay.rounds_relayed
    finally:
        if relay.transport is not None and not finished:
            relay.transport.stopping.set()  # stopped, not finished: the children keep waiting for it
        relay.close()

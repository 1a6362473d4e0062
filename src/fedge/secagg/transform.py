"""Secure aggregation as a pipeline transform: the ``[secagg]`` config section.

On the client (last in the pipeline, after clipping, DP noise ...) the update's
contribution terms (``strategy.contribution``: FedAvg's ``w * delta`` and ``w``) are
divided by ``max_weight``, clipped and fixed-point encoded into the ring; the words stay
in the client's own state and the float delta is removed from the update. The transform
answers the protocol's stage messages on the client (a
:class:`~fedge.transport.exchange.Responder`) and sums the cohort on the server (a
:class:`~fedge.transport.exchange.CohortSum`): the four stages run through the
transport's exchange with the real cryptography, only the total is unmasked, decoded and
handed to the strategy as the summed terms, exactly as the plain round would, up to the
fixed-point rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.config.schema import opt
from fedge.core.errors import ConfigError
from fedge.core.params import ParamSpec, zeros_like
from fedge.core.types import ClientContext, ClientUpdate
from fedge.engine.aggregator import BLOCK_KEY
from fedge.pipeline import RoundContext, Transform
from fedge.secagg import client as C
from fedge.secagg import fixedpoint
from fedge.secagg.graph import choose_parameters
from fedge.secagg.messages import STAGES, RoundSetup
from fedge.secagg.orchestrator import run_round
from fedge.secagg.server import SecAggAbort
from fedge.strategies.aggregate import Terms
from fedge.strategies.base import Strategy
from fedge.transport.exchange import Exchanger
from fedge.transport.inprocess import InProcessTransport

PAYLOAD_KEY = "secagg"
"""The update's payload entry that says its words wait, masked, for the protocol's stages."""
Layout = tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]


@dataclass
class SecAggConfig:
    enabled: bool = opt(False, "mask every update so the server learns only the cohort's sum")
    neighbours: int = opt(
        0, "SecAgg+ neighbours k per client (0 = chosen from the cohort size; n - 1 = classic SecAgg)", min=0
    )
    threshold: int = opt(0, "Shamir threshold t, a majority of the neighbours (0 = floor(k/2) + 1)", min=0)
    expected_dropout: float = opt(0.1, "dropout rate the default k is chosen to survive", min=0, max=0.49)
    clip: float = opt(
        1.0, "clipping range [-clip, clip] of each update value before encoding", min=0, exclusive_min=True
    )
    scale: float = opt(0.0, "fixed-point scale (0 = the largest that cannot overflow the ring)", min=0)
    max_weight: float = opt(
        1000.0, "cap on a client's weight (examples); terms are encoded divided by it", min=0, exclusive_min=True
    )
    bits: int = opt(32, "ring Z_{2^bits} of the masked vector", choices=(32, 64))
    simulate_dropout: float = opt(0.0, "simulation only: share of each cohort that vanishes", min=0, max=1)
    dropout_stage: str = opt("masked_input", "simulation only: the stage they vanish before", choices=STAGES)


def clients_of(update: ClientUpdate) -> int:
    """The clients a session participant stands for: its block's (:data:`BLOCK_KEY`, a relay), else one."""
    return max(1, len(update.payload.get(BLOCK_KEY, ())))


class SecureAggregation(Transform):
    """Pairwise-masked secure aggregation (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020)."""

    name = "secagg"
    stages = STAGES
    stage_s = math.inf
    """How long a stage waits for the clients' answers; a transport bounds it by its own limit."""

    def __init__(self, cfg: SecAggConfig, strategy: Strategy, *, max_cohort: int, pending: bool = False) -> None:
        if strategy.needs_individual_updates:
            raise ConfigError(
                f"secagg: strategy {strategy.name!r} needs individual updates, which secure "
                "aggregation hides from the server; choose a strategy that aggregates sums"
            )
        if max_cohort < 2:
            raise ConfigError(f"secagg: secure aggregation needs cohorts of at least 2 clients, got {max_cohort}")
        self.cfg = cfg
        self.pending = pending
        """Asynchronous buffers: hold the input unencoded until the session scales it (:func:`C.hold_pending`)."""
        self.strategy = strategy
        self.max_cohort = max_cohort
        self.range = max(cfg.clip, 1.0)
        self.max_weight = 1.0 if getattr(strategy, "weighting", "examples") == "uniform" else cfg.max_weight
        self.scale = cfg.scale or fixedpoint.max_scale(max_cohort, self.range, cfg.bits)
        fixedpoint.check_overflow(max_cohort, self.range, self.scale, cfg.bits)
        if cfg.neighbours or cfg.threshold:
            choose_parameters(max_cohort, cfg.expected_dropout, k=cfg.neighbours or max_cohort - 1, t=cfg.threshold)

    def _terms(self, update: ClientUpdate) -> tuple[Layout, npt.NDArray[np.float64]]:
        terms = self.strategy.contribution(update)
        layout = tuple((k, tuple(tuple(t.shape) for t in terms[k])) for k in sorted(terms))
        flat = [np.asarray(t, dtype=np.float64).ravel() for k in sorted(terms) for t in terms[k]]
        return layout, np.concatenate(flat) / self.max_weight

    def layout(self, spec: ParamSpec) -> Layout:
        probe = ClientUpdate(
            client_id=-1, delta=zeros_like([np.zeros(s, np.float32) for s in spec.shapes]), num_examples=1
        )
        return self._terms(probe)[0]

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        c = self.cfg.clip
        capped = replace(
            update,
            delta=[np.clip(d, -c, c) for d in update.delta],
            num_examples=int(min(update.num_examples, self.cfg.max_weight)),
        )
        _, values = self._terms(capped)
        if self.pending:
            seed = int(ctx.rng.integers(2**63))
            C.hold_pending(ctx.state, np.clip(values, -self.range, self.range), seed, clip=self.range, scale=self.scale)
            nbytes = values.size * (self.cfg.bits // 8)
        else:
            words = fixedpoint.encode(values, clip=self.range, scale=self.scale, rng=ctx.rng, bits=self.cfg.bits)
            C.hold_input(ctx.state, ctx.round_num, words)
            nbytes = int(words.nbytes)
        return replace(
            update,
            delta=[],
            extras={},
            payload={**update.payload, PAYLOAD_KEY: "ready"},
            uplink_bytes=int(nbytes) + 8,
        )

    def respond(self, stage: str, request: Any, *, client_id: int, state: dict[str, Any]) -> Any:
        """The client's answer to one stage message (:func:`fedge.secagg.client.respond`)."""
        return C.respond(stage, request, client_id=client_id, state=state)

    def encode_block(self, terms: Terms, clients: int, rng: np.random.Generator) -> npt.NDArray[Any]:
        """A relay's one input for its parent's session: the summed ``terms`` of its ``clients``
        children, encoded as one update's are but clipped to ``clients`` times the per-update range.

        The ring holds ``max_cohort`` clipped updates, so a block of ``clients`` of them counts as
        that many in the session (:data:`BLOCK_KEY`) and the total still cannot wrap."""
        if clients < 1:
            raise ConfigError(f"secagg: a relay's block sums at least one client, got {clients}")
        flat = [np.asarray(t, dtype=np.float64).ravel() for k in sorted(terms) for t in terms[k]]
        values = np.concatenate(flat) / self.max_weight
        reach = clients * self.range
        return fixedpoint.encode(values, clip=reach, scale=self.scale, rng=rng, bits=self.cfg.bits)

    def sum_cohort(
        self,
        updates: list[ClientUpdate],
        rctx: RoundContext,
        transport: Exchanger,
        *,
        factors: Mapping[int, float] | None = None,
    ) -> tuple[Terms, int, dict[str, list[int]]]:
        """Run the protocol with the clients of the round's updates through ``transport``;
        the summed terms, how many clients they hold, who dropped.

        ``factors[cid]`` in ``[0, 1]`` is sent to that client, which scales its pending input
        by it before masking, so the total is ``Σ factor_i · terms_i`` (asynchronous buffers).
        A participant whose update names a block (:data:`BLOCK_KEY`, a relay) counts as its
        block's clients. The one check left on masked inputs is made on the total: its weight
        may not exceed the examples (or clients) the survivors claimed in clear, or the round
        aborts — no single input can be checked, so no single participant can be blamed.
        """
        words, included, lost = self.sum_words(updates, rctx, transport, factors=factors)
        terms = self.decode(words, rctx.spec)
        summed = set(included)
        kept = [u for u in updates if u.client_id in summed]
        count = sum(clients_of(u) for u in kept)
        if "weight" in terms:
            w = float(np.sum(terms["weight"][0]))
            most = float(sum(max(u.num_examples, clients_of(u)) for u in kept))
            slack = len(kept) * self.max_weight / self.scale
            if not -slack <= w <= most * (1 + 1e-6) + slack:
                raise SecAggAbort(
                    f"secure aggregation aborted in round {rctx.round_num}: the unmasked sum weighs {w:g}, "
                    f"outside the 0..{most:g} its {len(kept)} participants claimed"
                )
        return terms, count, lost

    def decode(self, words: npt.NDArray[Any], spec: ParamSpec) -> Terms:
        """The summed terms a total of ring words stands for, in the layout of ``spec``'s updates."""
        values = fixedpoint.decode(words, scale=self.scale, bits=self.cfg.bits) * self.max_weight
        terms: Terms = {}
        at = 0
        for name, shapes in self.layout(spec):
            terms[name] = []
            for shape in shapes:
                size = int(np.prod(shape))
                terms[name].append(values[at : at + size].reshape(shape))
                at += size
        return terms

    def sum_words(
        self,
        updates: list[ClientUpdate],
        rctx: RoundContext,
        transport: Exchanger,
        *,
        factors: Mapping[int, float] | None = None,
    ) -> tuple[npt.NDArray[Any], list[int], dict[str, list[int]]]:
        """:meth:`sum_cohort` before decoding: the unmasked total as ring words (the exact sum of the
        encoded inputs of the participants it includes), those participants, who dropped (one that
        drops at the unmask stage is both: its input is in the total)."""
        if factors and not self.pending and any(f != 1.0 for f in factors.values()):
            raise ConfigError("secagg: only pending (asynchronous) inputs can be scaled in the session")
        layout = self.layout(rctx.spec)
        length = sum(int(np.prod(s)) for _, shapes in layout for s in shapes)
        cohort = tuple(sorted({u.client_id for u in updates}))
        clients = sum(clients_of(u) for u in updates)
        if clients > self.max_cohort:
            raise SecAggAbort(
                f"secure aggregation aborted in round {rctx.round_num}: {clients} clients "
                f"exceed the {self.max_cohort} the fixed-point scale was sized for"
            )
        if len(cohort) < 2:
            raise SecAggAbort(
                f"secure aggregation aborted in round {rctx.round_num}: {len(cohort)} client(s), need at least 2"
            )
        p = choose_parameters(
            len(cohort), self.cfg.expected_dropout, k=min(self.cfg.neighbours, len(cohort) - 1), t=self.cfg.threshold
        )
        if p.t > p.k:
            raise SecAggAbort(
                f"secure aggregation aborted in round {rctx.round_num}: threshold {p.t} "
                f"above the {p.k} neighbours of {len(cohort)} clients"
            )
        setup = RoundSetup(
            rctx.round_num, cohort, p.k, p.t, length, self.cfg.bits, graph_seed=int(rctx.rng.integers(2**62))
        )
        drop: dict[str, set[int]] = {}
        if self.cfg.simulate_dropout:
            m = round(self.cfg.simulate_dropout * len(cohort))
            ids = rctx.rng.choice(np.asarray(cohort), size=m, replace=False)
            if isinstance(transport, InProcessTransport):  # a deployment's nodes drop on their own
                drop[self.cfg.dropout_stage] = {int(i) for i in ids}
        res = run_round(setup, transport, deadline_s=self.stage_s, drop=drop, factors=factors)
        rctx.info.update(
            {
                "secagg_k": float(p.k),
                "secagg_t": float(p.t),
                "secagg_server_s": res.server_seconds,
                "secagg_protocol_bytes": float(sum(res.client_bytes.values())),
            }
        )
        return res.total, list(res.included), {f"secagg {k}": v for k, v in res.dropped.items()}

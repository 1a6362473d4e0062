"""A run resumed from a RoundState continues exactly: the same model, the same ε, round by round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedge.clients import LearnerClient, NumpyLogReg
from fedge.core.errors import ConfigError
from fedge.core.types import TrainConfig
from fedge.data import synthetic
from fedge.deploy.store import Store
from fedge.engine import Callback, RoundState, RunResult, StopRun, run
from fedge.pipeline import Pipeline
from fedge.privacy.accountant import Accountant
from fedge.privacy.transforms import AdaptiveClipping, CentralDP
from fedge.simulation import RoundRecord, Sampling
from fedge.strategies import FedAvg
from fedge.strategies.base import StrategyState
from fedge.strategies.influence import InfluenceBound, InfluenceLimits
from fedge.transport import InProcessTransport, SequentialBackend

FD = synthetic(0.5, 0.5, num_clients=10, seed=0)
MODEL = NumpyLogReg(60, 10)
ROUNDS = 4


def client_fn(cid: int) -> LearnerClient:
    return LearnerClient(cid, MODEL, FD.client(cid))


def dp() -> CentralDP:
    """Central DP with its accountant and adaptive clipping: both change every round."""
    return CentralDP(
        clip_norm=0.5,
        noise_multiplier=1.1,
        expected_clients=4,
        accountant=Accountant("rdp", "fixed", FD.num_clients, 4),
        adaptive=AdaptiveClipping(target_quantile=0.5, lr=0.2),
    )


class Keep(Callback):
    """Keeps the RoundState of one round; optionally stops the run after it."""

    def __init__(self, at: int, stop: bool = False) -> None:
        self.at, self.stop = at, stop
        self.state: RoundState | None = None

    def on_round_state(self, record: RoundRecord, state: RoundState) -> None:
        if record.round == self.at:
            self.state = state

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if self.stop and record.round == self.at:
            raise StopRun("interrupted")


def go(
    *,
    state: RoundState | None = None,
    callbacks: tuple[Callback, ...] = (),
    influence: InfluenceLimits | None = None,
    pipeline: Pipeline | None = None,
) -> tuple[RunResult, Pipeline]:
    """A freshly built run (new strategy, transport, transforms, bound) of ``ROUNDS`` rounds."""
    strategy = FedAvg()
    pipe = pipeline if pipeline is not None else Pipeline([dp()])
    transport = InProcessTransport(
        client_fn, FD.num_clients, strategy=strategy, pipeline=pipe, seed=3, backend=SequentialBackend()
    )
    result = run(
        strategy=strategy,
        transport=transport,
        initial_params=MODEL.init_params(3),
        rounds=ROUNDS,
        sampling=Sampling(count=4),
        train=TrainConfig(lr=0.05, epochs=1),
        pipeline=pipe,
        seed=3,
        callbacks=callbacks,
        state=state,
        influence=InfluenceBound(influence) if influence is not None else None,
    )
    return result, pipe


def epsilons(result: RunResult) -> dict[int, float]:
    return {r.round: float(r.extra["epsilon"]) for r in result.history}


@pytest.mark.parametrize("influence", [None, InfluenceLimits(examples_factor=1.5, norm_factor=1.0)])
def test_resumed_dp_run_reports_the_epsilon_and_model_of_the_uninterrupted_run(
    influence: InfluenceLimits | None,
) -> None:
    keep = Keep(at=2)
    whole, _ = go(callbacks=(keep,), influence=influence)
    assert keep.state is not None and keep.state.round_num == 2

    resumed, pipe = go(state=keep.state, influence=influence)

    assert [r.round for r in resumed.history] == [3, 4]
    eps_whole, eps_resumed = epsilons(whole), epsilons(resumed)
    assert eps_whole[3] > eps_whole[2] > eps_whole[1]
    assert eps_resumed == {3: eps_whole[3], 4: eps_whole[4]}
    for key in ("clip_norm", "next_clip_norm", "dp_rounds"):
        assert [r.extra[key] for r in resumed.history] == [r.extra[key] for r in whole.history][2:]
    for a, b in zip(resumed.state.params, whole.state.params, strict=True):
        np.testing.assert_array_equal(a, b)
    accountant = pipe.transforms[0].accountant  # type: ignore[attr-defined]
    assert accountant is not None and accountant.rounds == ROUNDS


def test_a_run_stopped_after_round_two_resumes_from_its_result_through_json() -> None:
    """The state a checkpoint stores (JSON for transforms and window) carries everything the rounds need."""
    whole, _ = go(influence=InfluenceLimits())
    stopped, _ = go(callbacks=(Keep(at=2, stop=True),), influence=InfluenceLimits())
    assert stopped.stopped_early == "interrupted" and stopped.round_state is not None
    saved = stopped.round_state
    assert saved.influence is not None and len(saved.influence) > 0
    stored = RoundState.stored(
        saved.strategy, json.loads(json.dumps(list(saved.transforms))), json.loads(json.dumps(saved.window()))
    )

    resumed, _ = go(state=stored, influence=InfluenceLimits())

    assert epsilons(resumed) == {3: epsilons(whole)[3], 4: epsilons(whole)[4]}
    for a, b in zip(resumed.state.params, whole.state.params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_captured_state_is_not_changed_by_later_rounds() -> None:
    keep = Keep(at=2)
    whole, _ = go(callbacks=(keep,))
    assert keep.state is not None
    assert keep.state.round_num == 2 and whole.state.round_num == ROUNDS
    assert sum(n for _, n in keep.state.transforms[0]["state"]["steps"]) == 2
    assert not np.array_equal(keep.state.strategy.params[0], whole.state.params[0])


def test_a_bare_strategy_state_resumes_the_model_but_not_the_accountant() -> None:
    """Why the engine resumes from a RoundState: the strategy state alone restarts ε from zero."""
    keep = Keep(at=2)
    whole, _ = go(callbacks=(keep,))
    assert keep.state is not None
    resumed, _ = go(state=keep.state.strategy)  # type: ignore[arg-type]
    assert epsilons(resumed)[3] < epsilons(whole)[3]


def test_restoring_into_a_different_pipeline_is_refused() -> None:
    keep = Keep(at=2)
    go(callbacks=(keep,))
    assert keep.state is not None
    with pytest.raises(ConfigError, match="resume with the same sections"):
        go(state=keep.state, pipeline=Pipeline())


class Saved(Callback):
    """What the deployed server's checkpoint does: every round's whole state into the SQLite store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def on_round_state(self, record: RoundRecord, state: RoundState) -> None:
        self.store.save_round(record, state)


def test_a_run_resumed_from_the_deployment_store_continues_exactly(tmp_path: Path) -> None:
    whole, _ = go(influence=InfluenceLimits())
    store = Store(tmp_path / "state.db")
    go(callbacks=(Saved(store), Keep(at=2, stop=True)), influence=InfluenceLimits())
    strategy = store.load_state()
    assert strategy is not None and strategy.round_num == 2
    stored = store.round_state(strategy)
    assert stored.influence is not None and stored.transforms[0]["name"] == "central_dp"

    resumed, _ = go(state=stored, influence=InfluenceLimits())

    assert epsilons(resumed) == {3: epsilons(whole)[3], 4: epsilons(whole)[4]}
    for a, b in zip(resumed.state.params, whole.state.params, strict=True):
        np.testing.assert_array_equal(a, b)

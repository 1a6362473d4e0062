"""One builder for every way fedge runs rounds: the Federation and its BuildContext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedge
from fedge.config.schema import Experiment, from_dict
from fedge.engine import RunResult
from fedge.experiment import run_experiment
from fedge.federation import BuildContext, Federation, build, client_side
from fedge.simulation.sampling import Sampling


def experiment(**sections: Any) -> Experiment:
    return from_dict(
        {
            "rounds": 2,
            "data": {"dataset": "synthetic", "num_clients": 10},
            "model": {"name": "logreg", "framework": "numpy"},
            **sections,
        }
    )


class RunSpy:
    """Counts the runs that go through :meth:`Federation.run` (and runs them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.federations: list[Federation] = []
        real = Federation.run

        def spy(fed: Federation, *args: Any, **kwargs: Any) -> RunResult:
            self.federations.append(fed)
            return real(fed, *args, **kwargs)

        monkeypatch.setattr(Federation, "run", spy)


def test_fedge_run_and_a_config_run_go_through_one_federation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spy = RunSpy(monkeypatch)
    rng = np.random.default_rng(0)
    clients = [(rng.normal(size=(20, 4)), rng.integers(0, 2, size=20)) for _ in range(3)]
    result = fedge.run(fedge.NumpyLogReg(4, 2), clients, rounds=2, clients_per_round=2)
    assert len(result.history) == 2
    run_experiment(experiment(), output=str(tmp_path / "run"))
    assert [f.exp is None for f in spy.federations] == [True, False]
    assert [f.ctx.population for f in spy.federations] == [3, 10]


def test_the_build_context_gives_every_part_the_one_cohort_size() -> None:
    """fraction 0.25 of 10 clients selects ceil(2.5) = 3: sampling, secure aggregation and the accountant agree."""
    from fedge.privacy.transforms import CentralDP
    from fedge.secagg.transform import SecureAggregation

    exp = experiment(
        training={"clients_per_round": 0, "fraction": 0.25},
        strategy={"name": "fedavg", "weighting": "uniform"},
        privacy={"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0, "clip_at": "client"},
        secagg={"enabled": True, "clip": 4.0},
    )
    fed = build(exp)
    assert (fed.ctx.population, fed.ctx.cohort) == (10, 3)
    assert fed.sampling.how_many(10) == 3
    (dp,) = [t for t in fed.pipeline.transforms if isinstance(t, CentralDP)]
    (sa,) = [t for t in fed.pipeline.transforms if isinstance(t, SecureAggregation)]
    assert dp.expected_clients == 3
    assert dp.accountant is not None and (dp.accountant.population, dp.accountant.cohort) == (10, 3)
    assert sa.max_cohort == 3


def test_a_robust_rule_is_checked_against_the_cohort_a_round_really_selects() -> None:
    """Krum with f = 2 needs 7 clients; fraction 0.5 of 10 selects 5, which is refused before round 1."""
    with pytest.raises(fedge.ConfigError, match="needs at least 7 clients per round, but a round selects 5"):
        build(
            experiment(
                training={"clients_per_round": 0, "fraction": 0.5},
                strategy={"name": "krum"},
                robust={"byzantine": 2},
            )
        )


def test_a_served_federation_evaluates_on_its_nodes_and_builds_no_in_process_transport() -> None:
    fed = build(experiment(evaluation={"federated_clients": 5}), deployed=True)
    assert fed.deployed and fed.eval_plan.federated_clients == 5  # nodes evaluate over gRPC
    assert "transport" not in vars(fed)  # the in-process transport is built only for a simulated run
    simulated = build(experiment(evaluation={"federated_clients": 5}))
    assert simulated.eval_plan.federated_clients == 5


def test_a_node_builds_the_client_side_of_the_servers_pipeline() -> None:
    from fedge.deploy.node import load_experiment
    from fedge.deploy.server import node_config

    exp = experiment(
        privacy={"mode": "local", "clip_norm": 1.0, "local_epsilon": 8.0},
        compression={"codec": "int8"},
    )
    server = build(exp, deployed=True)
    strategy, pipeline = client_side(load_experiment(node_config(exp, 2)))
    assert strategy.name == server.strategy.name
    assert [t.name for t in pipeline.transforms] == [t.name for t in server.pipeline.transforms]


def test_a_federation_of_objects_has_no_config_sections() -> None:
    fed = Federation.of(
        strategy=fedge.FedAvg(),
        client_fn=lambda cid: None,  # type: ignore[arg-type,return-value]
        num_clients=4,
        initial=[np.zeros(2, np.float32)],
        rounds=1,
        sampling=Sampling(count=2),
        train=fedge.TrainConfig(),
    )
    assert fed.ctx == BuildContext(population=4, cohort=2, sampling=Sampling(count=2))
    assert fed.extras() == ([], None)
    with pytest.raises(fedge.ConfigError, match="built from Python objects"):
        _ = fed.config

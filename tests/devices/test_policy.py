import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.config.schema import Experiment
from fedge.core.errors import ConfigError
from fedge.core.types import TrainConfig
from fedge.devices import policy_from_config
from fedge.devices.cost import count_mlp
from fedge.devices.policy import DevicePolicy
from fedge.devices.profiles import Fleet, builtin_catalog
from fedge.federation import build, execute
from fedge.simulation.history import RoundRecord
from fedge.simulation.sampling import Sampling

CAT = builtin_catalog()
MODEL = count_mlp([60, 10])


def policy(kind, n=20, slow_every=2, **kw):
    profs = [CAT["pi-zero-2w"] if i % slow_every == 0 else CAT["orin-nano"] for i in range(n)]
    fleet = Fleet(profs, np.ones(n))
    sizes = np.full(n, 100, dtype=np.int64)
    return DevicePolicy(
        fleet=fleet, model=MODEL, sizes=sizes, train=TrainConfig(epochs=2, batch_size=10), policy=kind, **kw
    )


def run_round(pol, k=10, seed=0):
    rng = np.random.default_rng(seed)
    avail = pol.available(1, list(range(len(pol.sizes))))
    sel = pol.select(1, avail, Sampling(count=k), rng)
    plan = pol.plan(1, sel, rng)
    metrics = {}
    for c in plan.train:
        steps = plan.overrides.get(c, {}).get("max_steps", 20)
        metrics[c] = {"steps": float(steps), "num_examples": 100.0, "uplink_bytes": 2440.0, "train_loss": 1.0}
    rec = RoundRecord(round=1, participants=len(plan.train), downlink_bytes=2440 * len(plan.train))
    pol.finish(1, rec, metrics)
    return sel, plan, rec


def test_wait_all_lasts_as_long_as_the_slowest():
    pol = policy("wait_all")
    sel, plan, rec = run_round(pol)
    assert plan.train == sel and not plan.dropped
    assert rec.extra["sim_time_s"] == pytest.approx(max(pol.predicted_time(sel)))
    assert rec.extra["sim_clock_s"] == rec.extra["sim_time_s"]


def test_deadline_drops_late_clients_without_training_them():
    fast = policy("wait_all").predicted_time([1])[0]
    pol = policy("deadline", deadline_s=fast * 1.5)
    sel, plan, rec = run_round(pol, k=20)
    assert set(plan.dropped["deadline"]) == {c for c in sel if c % 2 == 0}
    assert set(plan.train) == {c for c in sel if c % 2 == 1}
    assert rec.extra["sim_time_s"] == pytest.approx(fast * 1.5)
    assert rec.extra["energy_wasted_j"] > 0


def test_overcommit_keeps_the_first_k():
    pol = policy("overcommit", overcommit=1.5, slow_every=3)
    sel, plan, rec = run_round(pol, k=10)
    assert len(sel) == 15 and len(plan.train) == 10
    assert len(plan.dropped["over-committed"]) == 5
    kept = pol.predicted_time(plan.train)
    late = pol.predicted_time(plan.dropped["over-committed"])
    assert kept.max() <= late.min()
    assert rec.extra["sim_time_s"] == pytest.approx(kept.max())


def test_partial_work_fits_the_deadline():
    pol = policy("partial", deadline_s=0.1)
    _sel, plan, rec = run_round(pol, k=20)
    slow = [c for c in plan.train if c % 2 == 0]
    assert slow and all(0 < plan.overrides[c]["max_steps"] < 20 for c in slow)
    assert all(c not in plan.overrides for c in plan.train if c % 2 == 1)
    costs = [pol.cost(c, plan.overrides.get(c, {}).get("max_steps", 20), 2440.0).total_s for c in plan.train]
    assert max(costs) <= 0.1 + 1e-9
    assert rec.extra["sim_time_s"] == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["partial", "wait_all"])
def test_stragglers_kept_with_partial_work_or_dropped(kind):
    pol = policy(kind, straggler_fraction=0.5)
    _sel, plan, _ = run_round(pol, k=10)
    if kind == "partial":
        assert len(plan.train) == 10
        assert all(plan.overrides[c]["max_steps"] % 10 == 0 for c in plan.overrides)
    else:
        assert len(plan.dropped["straggler"]) == 5 and len(plan.train) == 5 and not plan.overrides


def test_dropouts_and_memory_eligibility():
    pol = policy("wait_all", dropout=0.5)
    _, plan, _rec = run_round(pol, k=20)
    assert 0 < len(plan.dropped["dropout"]) < 20
    assert not set(plan.dropped["dropout"]) & set(plan.train)
    big = count_mlp([20000, 4000, 10])
    fleet = Fleet([CAT["zonal-ecu"], CAT["pi4"]], np.ones(2))
    pol = DevicePolicy(fleet=fleet, model=big, sizes=np.array([10, 10]), train=TrainConfig())
    assert pol.available(1, [0, 1]) == [1]
    assert pol.ineligible[0] == "memory: needs 611.0 MiB, zonal-ecu has 256 MiB"


def test_bad_policy_config():
    with pytest.raises(ConfigError, match="overcommit must be >= 1"):
        policy("overcommit", overcommit=0.5)
    with pytest.raises(ConfigError, match=r"devices\.selection"):
        policy("wait_all", selection="random")


def small_experiment(**devices):
    exp = Experiment()
    exp.rounds = 3
    exp.data.num_clients = 12
    exp.model.framework = "numpy"
    exp.training.clients_per_round = 4
    exp.training.local_epochs = 1
    d = exp.section("devices")
    for k, v in devices.items():
        setattr(d, k, v)
    return exp


def test_experiment_records_simulated_time_and_keeps_training_identical():
    plain = execute(build(small_experiment()))
    sim = execute(build(small_experiment(enabled=True, fleet={"pi4": 0.5, "pi-zero-2w": 0.5})))
    for a, b in zip(plain.history, sim.history, strict=True):
        assert a.test_accuracy == b.test_accuracy
        assert b.extra["sim_time_s"] > 0 and b.extra["energy_j"] > 0
        assert set(b.extra["device_mix"]) <= {"pi4", "pi-zero-2w"}
        assert sum(b.extra["device_mix"].values()) == b.participants
    clocks = [r.extra["sim_clock_s"] for r in sim.history]
    assert clocks == sorted(clocks) and math.isclose(clocks[-1], sum(r.extra["sim_time_s"] for r in sim.history))


def test_disabled_section_builds_no_policy_and_mix_errors_are_one_line():
    exp = small_experiment()
    assert policy_from_config(exp, build(exp)) is None
    exp = small_experiment(enabled=True, fleet={"pi-zero": 1.0})
    with pytest.raises(ConfigError, match="unknown device 'pi-zero'; did you mean 'pi-zero-2w'"):
        policy_from_config(exp, build(exp))


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["wait_all", "deadline", "overcommit", "partial"]),
    selection=st.sampled_from(["uniform", "weighted", "fastest", "oort"]),
    dropout=st.floats(0, 0.5),
    strag=st.floats(0, 1),
    dl=st.floats(0, 0.2),
    k=st.integers(1, 20),
    seed=st.integers(0, 1000),
)
def test_plan_partitions_the_cohort(kind, selection, dropout, strag, dl, k, seed):
    pol = policy(
        kind,
        n=24,
        slow_every=3,
        selection=selection,
        dropout=dropout,
        straggler_fraction=strag,
        deadline_s=dl,
        seed=seed,
    )
    before = pol.clock
    sel, plan, rec = run_round(pol, k=k, seed=seed)
    dropped = [c for ids in plan.dropped.values() for c in ids]
    assert sorted(dropped + plan.train) == sorted(sel)
    assert len(set(dropped)) == len(dropped)
    assert set(plan.overrides) <= set(plan.train)
    assert all(0 < o["max_steps"] < 20 for o in plan.overrides.values())
    if kind == "overcommit":
        assert len(plan.train) <= k
    if kind == "deadline" and dl > 0:
        assert all(t <= dl for t in pol.predicted_time(plan.train))
    assert rec.extra["sim_time_s"] >= 0 and pol.clock == before + rec.extra["sim_time_s"]
    assert rec.extra["energy_j"] >= rec.extra["energy_wasted_j"] >= 0


def test_nobody_online_idles_the_clock():
    class Nobody:
        def online(self, ids, t):
            return []

    pol = policy("wait_all", availability=Nobody())
    sel, plan, rec = run_round(pol)
    assert sel == [] and plan.train == []
    assert rec.extra["sim_time_s"] == 60.0 and rec.extra["online"] == 0

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import DataError
from fedge.core.types import ClientContext, ClientUpdate
from fedge.data.keyvalue import KeyHasher, collisions, load_keyvalue, read_records
from fedge.pipeline import Transform

SECRET = b"fleet-secret-0123456789abcdef"
keys = st.text(min_size=1, max_size=24)
values = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(keys, values, max_size=12), st.dictionaries(keys, values, max_size=12), st.integers(1, 512))
def test_hashed_vector_is_linear_in_the_records(a: dict[str, float], b: dict[str, float], dim: int) -> None:
    h = KeyHasher(SECRET, dim)
    b = {k: v for k, v in b.items() if k not in a}
    joint = h.vector({**a, **b}).astype(np.float64)
    assert np.allclose(joint, h.vector(a).astype(np.float64) + h.vector(b), atol=1e-2)
    for k in a:
        i, s = h.bucket(k)
        assert 0 <= i < dim and s in (-1.0, 1.0)
        assert h.bucket(k) == (i, s)


@settings(max_examples=25, deadline=None)
@given(st.lists(keys, min_size=1, max_size=60, unique=True), st.integers(1, 64))
def test_collisions_match_brute_force(ks: list[str], dim: int) -> None:
    h = KeyHasher(SECRET, dim)
    per = Counter(h.bucket(k)[0] for k in ks)
    c = collisions(ks + ks[:3], h)
    assert c.keys == len(ks) and c.occupied == len(per)
    assert c.colliding_keys == sum(n for n in per.values() if n > 1)
    assert (c.colliding_keys == 0) == (c.occupied == c.keys)


def test_collision_rate_is_near_what_uniform_hashing_predicts() -> None:
    ks = [f"sensor.channel.{i}" for i in range(400)]
    c = collisions(ks, KeyHasher(SECRET, 1024))
    assert 0.2 < c.expected_rate < 0.35
    assert abs(c.rate - c.expected_rate) < 0.1


def test_the_secret_decides_the_buckets() -> None:
    ks = [f"app.{i}" for i in range(50)]
    a = [KeyHasher(SECRET, 4096).bucket(k) for k in ks]
    b = [KeyHasher(b"another-secret-of-the-fleet!", 4096).bucket(k) for k in ks]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 40
    with pytest.raises(DataError, match="at least 16 bytes"):
        KeyHasher(b"short", 8)
    with pytest.raises(DataError, match="dimension"):
        KeyHasher(SECRET, 0)


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


BAD_ROWS: list[Any] = [
    {"client_id": "a", "label": "x", "features": {"k1": 1.0}},
    {"client_id": "a", "features": {"k1": 1.0}},
    {"client_id": "a", "label": "y", "features": {"k1": "high"}},
    {"client_id": "a", "label": "y", "features": {"k1": True}},
    "{broken",
    {"label": "y", "features": {}},
    {"client_id": "b", "label": "y", "features": [1, 2]},
    {"client_id": "b", "label": "y", "features": {"k2": 2}},
]


def test_bad_records_are_skipped_and_counted(tmp_path: Path) -> None:
    records, stats = read_records(_write(tmp_path / "r.jsonl", BAD_ROWS))
    assert [r.label for r in records] == ["x", "y"]
    assert stats.kept == 2 and stats.lines == 8 and stats.skipped_total == 6
    assert stats.skipped == Counter(
        {
            "missing label": 1,
            "non-numeric feature value": 2,
            "corrupt JSON": 1,
            "missing or invalid client_id": 1,
            "features is not an object": 1,
        }
    )


def test_strict_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", BAD_ROWS)
    with pytest.raises(DataError, match=r"r\.jsonl:2: missing label"):
        read_records(path, strict=True)
    with pytest.raises(DataError, match="no usable records"):
        load_keyvalue(_write(tmp_path / "bad.jsonl", BAD_ROWS[1:4]), secret=SECRET)
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "absent.jsonl")


def test_loader_federates_by_client_with_fixed_label_order(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for car in ("car-2", "car-10", "car-1"):
        _write(
            folder / f"{car}.jsonl",
            [
                {
                    "client_id": car,
                    "label": ["drowsy", "alert"][i % 2],
                    "features": {f"k{j}": float(rng.normal()) for j in range(5)},
                }
                for i in range(10)
            ],
        )
    kv = load_keyvalue(folder, secret=SECRET, dim=32, labels=["alert", "drowsy", "distracted"], test_fraction=0.2)
    d = kv.dataset
    assert kv.client_names == ["car-1", "car-2", "car-10"]
    assert d.num_clients == 3 and d.num_classes == 3 and d.feature_shape == (32,)
    assert [len(d.client(k).y_train) for k in range(3)] == [8, 8, 8]
    assert set(d.y.tolist()) == {0, 1}
    assert kv.collisions.keys == 5 and kv.stats.kept == 30


class WireCapture(Transform):
    """Last client transform: keeps the bytes the update would travel as."""

    name = "capture"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        from fedge.deploy import wire

        tree = {
            "delta": list(update.delta),
            "num_examples": int(update.num_examples),
            "metrics": update.metrics,
            "extras": {k: list(v) for k, v in update.extras.items()},
            "payload": update.payload,
        }
        out = wire.encode(tree)
        self.sent.append(out.header.SerializeToString() + bytes(out.body))
        self.sent.append(pickle.dumps(update))
        return update


def test_no_raw_key_in_anything_the_client_sends(tmp_path: Path) -> None:
    from fedge.api import run
    from fedge.models import build_learner

    rng = np.random.default_rng(1)
    channels = [f"cabin.eyelid.perclos.ch{i:02d}" for i in range(12)] + ["steering.reversal_rate"]
    rows = []
    for car in range(4):
        for i in range(30):
            label = ["alert", "drowsy"][i % 2]
            feats = {c: float(rng.normal(1.0 if label == "drowsy" else 0.0)) for c in channels}
            rows.append({"client_id": f"car-{car}", "label": label, "features": feats})
    kv = load_keyvalue(_write(tmp_path / "fleet.jsonl", rows), secret=SECRET, dim=64)
    d = kv.dataset
    capture = WireCapture()
    learner = build_learner("logreg", "numpy", d.feature_shape, d.num_classes, [])
    clients = [(d.client(k).x_train, d.client(k).y_train) for k in range(d.num_clients)]
    result = run(learner, clients, rounds=2, clients_per_round=4, transforms=[capture])
    assert len(result.history) == 2
    assert len(capture.sent) == 16
    blob = b"".join(capture.sent)
    assert len(blob) > 64 * 4 * 8
    for key in channels:
        assert key.encode() not in blob, key
        for part in key.split("."):
            if len(part) > 4:
                assert part.encode() not in blob, part
    assert SECRET not in blob
    control = WireCapture()
    control.client(ClientUpdate(0, [np.zeros(3, np.float32)], 1, metrics={channels[0]: 1.0}), ClientContext(0, 1, rng))
    assert all(channels[0].encode() in sent for sent in control.sent)


def test_driver_state_fleet_is_learnable_from_masked_keys(tmp_path: Path) -> None:
    """The example's generator, hashed keys only, a few federated rounds: well above chance."""
    import importlib.util

    from fedge.api import run
    from fedge.models import build_learner

    gen_path = Path(__file__).resolve().parents[2] / "examples" / "driver_state" / "generate.py"
    spec = importlib.util.spec_from_file_location("driver_state_generate", gen_path)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rng = np.random.default_rng(0)
    folder = tmp_path / "fleet"
    folder.mkdir()
    for k in range(12):
        _write(folder / f"car-{k:03d}.jsonl", gen.make_car(k, rng, 60, 1.0))
    kv = load_keyvalue(folder, secret=SECRET, dim=256, labels=list(gen.STATES), test_fraction=0.25)
    assert kv.stats.kept > 600
    d = kv.dataset
    learner = build_learner("logreg", "numpy", d.feature_shape, d.num_classes, [])
    clients = [(d.client(k).x_train, d.client(k).y_train) for k in range(d.num_clients)]
    result = run(learner, clients, rounds=8, clients_per_round=6, local_epochs=2, lr=0.1, test=d.central())
    assert result.history.final_accuracy > 0.8, result.history.final_accuracy

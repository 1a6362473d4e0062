"""Core helpers: atomic output folders and the Params flat view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ValidationError
from fedge.core.files import atomic_folder
from fedge.core.params import ParamSpec, flatten, l2_norm, unflatten


def test_atomic_folder_replaces_on_success(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_atomic_folder_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 1000))
def test_flatten_unflatten_round_trip(shape_list, seed) -> None:
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(np.float32) for s in shape_list]
    spec = ParamSpec.of(params)
    flat = flatten(params)
    assert flat.shape == (spec.total,)
    back = unflatten(flat, spec)
    assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(params, back, strict=True))
    assert l2_norm(params) == pytest.approx(float(np.linalg.norm(flat.astype(np.float64))), rel=1e-6)


def test_spec_check_names_the_problem() -> None:
    spec = ParamSpec(((2, 3), (3,)))
    with pytest.raises(ValidationError, match="tensor 1 has shape"):
        spec.check([np.zeros((2, 3)), np.zeros(4)])
    with pytest.raises(ValidationError, match="1 tensors, expected 2"):
        spec.check([np.zeros((2, 3))])
    with pytest.raises(ValidationError, match="expected 9"):
        unflatten(np.zeros(5, np.float32), spec)

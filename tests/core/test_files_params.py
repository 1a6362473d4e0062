"""Core helpers: atomic output folders and the Params flat view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import ConfigError, ValidationError
from fedge.core.files import atomic_folder, claim_output, is_fedge_folder
from fedge.core.params import ParamSpec, flatten, l2_norm, unflatten


def earlier_run(path: Path, text: str = "old") -> Path:
    """A folder as an earlier ``fedge run`` left it (its marker and one file)."""
    with atomic_folder(path) as tmp:
        (tmp / "old.txt").write_text(text)
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_folder_replaces_an_earlier_run_only_with_overwrite(tmp_path: Path) -> None:
    out = earlier_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="holds an earlier fedge run; pass --overwrite"), atomic_folder(out):
        pytest.fail("the block must not run")
    assert (out / "old.txt").read_text() == "old"
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()
    assert names(out) == [".fedge-run", "new.txt"]
    assert names(tmp_path) == ["run"]


def test_atomic_folder_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = earlier_run(tmp_path / "run")
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert names(out) == [".fedge-run", "old.txt"]
    assert names(tmp_path) == ["run"]


def test_a_folder_fedge_did_not_write_is_never_touched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="is not empty and is not a fedge run"):
            claim_output(out, overwrite=overwrite)
    assert names(out) == ["thesis.txt"] and (out / "thesis.txt").read_text() == "years of work"
    assert names(tmp_path) == ["mine"]


def test_an_older_fedge_run_without_the_marker_counts_as_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.toml", "summary.json", "metrics.jsonl"):
        (out / name).write_text("")
    assert is_fedge_folder(out)
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert names(out) == [".fedge-run", "summary.json"]


def test_unique_names_never_replace_a_run(tmp_path: Path) -> None:
    first = earlier_run(tmp_path / "run", "first")
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "user.txt").write_text("mine")
    with atomic_folder(first, unique=True) as tmp:
        (tmp / "old.txt").write_text("second")
    assert names(tmp_path) == ["run", "run-2", "run-3"]
    assert (first / "old.txt").read_text() == "first"
    assert (tmp_path / "run-2" / "user.txt").read_text() == "mine"
    assert (tmp_path / "run-3" / "old.txt").read_text() == "second"


@pytest.mark.parametrize("target", [".", "..", "sub/.."])
def test_the_working_directory_is_never_a_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    cwd = tmp_path / "project"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "notes.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    for overwrite, unique in ((False, False), (True, False), (False, True), (True, True)):
        with pytest.raises(ConfigError, match="is the working directory or contains it"):
            claim_output(target, overwrite=overwrite, unique=unique)
    assert names(cwd) == ["notes.txt", "sub"] and names(tmp_path) == ["project"]


def test_a_symlink_or_file_is_not_a_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        claim_output(tmp_path / "link", overwrite=True)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        claim_output(tmp_path / "file", overwrite=True)
    with pytest.raises(ConfigError, match=r"cannot create the output folder: .*file is a file, not a folder"):
        claim_output(tmp_path / "file" / "deeper" / "run")
    assert names(tmp_path) == ["file", "link", "real"] and (tmp_path / "file").read_text() == "x"


def test_claim_creates_only_a_hidden_sibling_until_commit(tmp_path: Path) -> None:
    folder = claim_output(tmp_path / "a" / "run")
    assert folder.tmp.parent == tmp_path / "a" and folder.tmp.name.startswith(".run.")
    assert (folder.tmp / ".fedge-run").is_file() and not (tmp_path / "a" / "run").exists()
    folder.discard()
    assert names(tmp_path / "a") == []


def test_commit_does_not_replace_what_appeared_meanwhile(tmp_path: Path) -> None:
    named = claim_output(tmp_path / "run")
    auto = claim_output(tmp_path / "auto", unique=True)
    for path in (tmp_path / "run", tmp_path / "auto"):
        path.mkdir()
        (path / "user.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"the output was written to .*run-2 instead"):
        named.commit()
    assert auto.commit() == tmp_path / "auto-2"
    assert names(tmp_path) == ["auto", "auto-2", "run", "run-2"]
    assert all((tmp_path / n / "user.txt").read_text() == "mine" for n in ("run", "auto"))
    assert is_fedge_folder(tmp_path / "run-2") and is_fedge_folder(tmp_path / "auto-2")


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

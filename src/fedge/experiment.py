"""Build and run a whole experiment from its configuration, and write its output folder.

The folder holds ``config.toml`` (resolved), ``metrics.jsonl`` and ``metrics.csv`` (one
row per round), ``model.npz`` and ``model.pt`` (PyTorch state dict, for torch models),
``partition.json`` (label histogram per client), ``summary.json``, and ``clients.json`` /
``labels.json`` (``{"0": "car-00", ...}``) when the data named its clients or labels. It is
written to a temporary sibling and renamed into place, so a failed run leaves nothing
half-written, and it never replaces a folder fedge did not write (:mod:`fedge.core.files`).
A run stopped by Ctrl-C or by a diverging loss keeps its finished rounds, marked
``"partial": true`` in ``summary.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedge.config.schema import Experiment, to_toml
from fedge.core.errors import FedgeError
from fedge.core.files import OutputFolder, claim_output
from fedge.core.params import Params
from fedge.data.federated import FederatedDataset
from fedge.data.names import mapping
from fedge.engine import Callback, RoundPolicy, RunResult, StopRun
from fedge.federation import BuildContext, Federation, Recorder, build
from fedge.pipeline import Transform
from fedge.preflight import check_extras
from fedge.simulation.history import History, RoundRecord, write_csv, write_jsonl
from fedge.strategies.base import StrategyState
from fedge.transport.inprocess import Backend, ClientFn

# The optional parts of fedge contribute pipeline transforms, callbacks, round policies,
# client and backend wrappers built from their own config sections (privacy, compression, devices ...)
# through these hooks, declared in their fedge.plugins.Hooks.
TransformFactory = Callable[[Experiment, BuildContext], Sequence[Transform]]
CallbackFactory = Callable[[Experiment, "Federation"], Sequence[Callback]]
ClientWrapper = Callable[[Experiment, FederatedDataset, ClientFn], ClientFn]
"""Wrap how clients are built (e.g. attack simulation turns some clients malicious)."""
PolicyFactory = Callable[[Experiment, "Federation"], "RoundPolicy | None"]
BackendWrapper = Callable[[Experiment, "Federation", Backend], Backend]
"""Wrap a simulated run's execution backend (the hierarchy runs the cohort through its relays)."""


def save_params_npz(params: Params, path: Path) -> None:
    arrays: dict[str, Any] = {f"p{i:03d}": p for i, p in enumerate(params)}
    np.savez(path, **arrays)


def load_params_npz(path: Path) -> Params:
    with np.load(path) as f:
        return [f[k].astype(np.float32) for k in sorted(f.files)]


def write_outputs(fed: Federation, result: RunResult, out: Path, wall_s: float, *, overwrite: bool = False) -> Path:
    """Write the run folder ``out`` by the rules of :mod:`fedge.core.files` (never over a user's folder).

    ``overwrite`` allows replacing an earlier fedge run there. Long-running callers claim the
    folder before training instead (:func:`~fedge.core.files.claim_output`) and call
    :func:`write_run_files` into it.
    """
    folder = claim_output(out, overwrite=overwrite)
    try:
        write_run_files(fed, result, folder.tmp, wall_s)
        return folder.commit()
    except BaseException:
        folder.discard()
        raise


def write_record(exp: Experiment, history: History, tmp: Path) -> None:
    """The files every run folder holds: ``config.toml`` (the sections the run used, no secrets),
    ``metrics.jsonl`` and ``metrics.csv``."""
    from fedge.report.config import without_secrets

    # The run folder is shared and archived: it keeps no dashboard token or tracking credentials.
    (tmp / "config.toml").write_text(to_toml(without_secrets(exp), commented=False, used=True))
    write_jsonl(history, tmp / "metrics.jsonl")
    write_csv(history, tmp / "metrics.csv")


def write_run_files(
    fed: Federation, result: RunResult, tmp: Path, wall_s: float, *, stopped: str | None = None
) -> None:
    """Write a run's files into the fresh folder ``tmp``.

    ``stopped`` marks a partial run (``"interrupted"``, ``"diverged"``): ``summary.json`` then
    has ``"partial": true`` and the files hold the rounds that finished.
    """
    data = fed.dataset
    write_record(fed.config, result.history, tmp)
    save_params_npz(result.state.params, tmp / "model.npz")
    module = getattr(fed.learner, "module", None)
    if module is not None:
        import torch

        from fedge.clients.torch_learner import set_params

        set_params(module, result.state.params)
        torch.save(module.state_dict(), tmp / "model.pt")
    hist = data.label_histogram()
    (tmp / "partition.json").write_text(
        json.dumps(
            {
                "dataset": data.name,
                "num_classes": data.num_classes,
                "label_histogram": hist.tolist(),
            }
        )
    )
    for file, names in (("clients.json", data.client_names), ("labels.json", data.label_names)):
        if names is not None:
            (tmp / file).write_text(json.dumps(mapping(names), indent=2, ensure_ascii=False))
    summary: dict[str, Any] = {
        "rounds": len(result.history),
        "num_clients": data.num_clients,
        "final_test_accuracy": result.history.final_accuracy,
        "final_test_loss": result.history.last("test_loss"),
        "wall_s": wall_s,
        "stopped_early": result.stopped_early,
        "partial": stopped is not None,
        "stopped": stopped,
        "client_accuracy": {str(k): v for k, v in sorted(result.client_accuracy.items())},
    }
    if any("wan_bytes" in r.extra for r in result.history):
        from fedge.hierarchy import tier_totals

        summary["hierarchy"] = tier_totals(result.history)
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


DIVERGENCE_FACTOR = 1e3
"""A loss this many times the initial model's (or non-finite) stops the run as diverged."""


NON_FINITE = "NaN or Inf"
"""What the update validator's rejection says (:mod:`fedge.transport.base`): a cohort of only those diverged."""


class TrainingDiverged(FedgeError):
    """The training loss became non-finite or exploded; the finished rounds were kept as a partial run."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``out`` holds the finished rounds as a partial run (None if none finished)."""

    def __init__(self, rounds: int, out: Path | None) -> None:
        super().__init__(f"interrupted after {rounds} finished rounds")
        self.rounds = rounds
        self.out = out


class DivergenceGuard(Callback):
    """Stops a diverging run: a loss turns NaN/Inf or exceeds ``factor`` × the initial model's.

    A round whose every update was rejected for NaN/Inf values counts too: the model could
    never move again. ``reference`` is the initial model's loss on the held-out set (None: the first round's
    train loss). A round in which every client failed prints one warning with the reason.
    """

    def __init__(self, reference: float | None, factor: float = DIVERGENCE_FACTOR) -> None:
        self.reference = reference if reference is not None and math.isfinite(reference) else None
        self.factor = factor
        self.diverged: str | None = None
        self._warned = False

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if record.participants == 0 and record.dropped and all(NON_FINITE in r for r in record.dropped):
            self.diverged = f"every client's update had NaN or Inf values in round {record.round}"
            raise StopRun(f"diverged: {self.diverged}")
        if record.participants == 0 and record.failed and not self._warned:
            self._warned = True
            reason = next(iter(record.dropped), "unknown")
            print(f"warning: round {record.round}: no client update was usable ({reason})", file=sys.stderr)
        train_loss = record.train_loss if record.participants else math.nan
        losses = [("train loss", train_loss), ("test loss", record.test_loss)]
        if self.reference is None and math.isfinite(record.train_loss):
            self.reference = max(abs(record.train_loss), 1e-3)
        limit = self.factor * max(self.reference or 0.0, 1e-3)
        for what, value in losses:
            if math.isinf(value) or (what == "train loss" and record.participants and math.isnan(value)):
                self.diverged = f"the {what} became {value} in round {record.round}"
            elif self.reference is not None and math.isfinite(value) and value > limit:
                self.diverged = (
                    f"the {what} reached {value:.3g} in round {record.round}, over {self.factor:g} × the initial "
                    f"{self.reference:.3g}"
                )
            if self.diverged:
                raise StopRun(f"diverged: {self.diverged}")


def _initial_loss(fed: Federation) -> float | None:
    x_c, y_c = fed.dataset.central()
    if not len(y_c):
        return None
    try:
        return float(fed.model.evaluate(fed.initial, x_c, y_c)[0])
    except Exception:
        return None


def claim_run_folder(exp: Experiment, output: str | Path | None, *, overwrite: bool = False) -> OutputFolder:
    """Claim the run's output folder before any work: ``output`` as given, else the config's
    ``output`` template with a ``-2``, ``-3`` ... suffix when taken (unless ``overwrite``)."""
    if output:
        return claim_output(output, overwrite=overwrite)
    return claim_output(exp.output_dir(), overwrite=overwrite, unique=True)


def run_experiment(
    exp: Experiment,
    callbacks: Sequence[Callback] = (),
    output: str | None = None,
    *,
    overwrite: bool = False,
) -> tuple[RunResult, Path]:
    """Check, build, run and write one experiment; returns the result and its run folder.

    Everything that can be checked is checked before round 1 (extras, output folder, data
    and model shapes, cohort size). Ctrl-C raises :class:`RunInterrupted` after writing the
    finished rounds as a partial run; a diverging loss raises :class:`TrainingDiverged` after
    the same.
    """
    t0 = time.perf_counter()
    check_extras(exp)
    folder = claim_run_folder(exp, output, overwrite=overwrite)
    try:
        fed = build(exp)
        recorder, guard = Recorder(), DivergenceGuard(_initial_loss(fed))
        try:
            result = fed.run(callbacks=[recorder, *callbacks, guard])
        except KeyboardInterrupt:
            raise _interrupted(fed, recorder, folder, time.perf_counter() - t0) from None
        stopped = "diverged" if guard.diverged else None
        write_run_files(fed, result, folder.tmp, time.perf_counter() - t0, stopped=stopped)
        out = folder.commit()
    except BaseException:
        folder.discard()
        raise
    if guard.diverged:
        raise TrainingDiverged(
            f"training diverged: {guard.diverged}; lower training.lr (the finished rounds are in {out}, marked partial)"
        )
    return result, out


def _interrupted(fed: Federation, recorder: Recorder, folder: OutputFolder, wall_s: float) -> RunInterrupted:
    """Write the finished rounds as a partial run and return the exception that reports it."""
    if recorder.state is None or not len(recorder.history):
        folder.discard()
        return RunInterrupted(0, None)
    result = RunResult(history=recorder.history, state=recorder.state, stopped_early="interrupted")
    write_run_files(fed, result, folder.tmp, wall_s, stopped="interrupted")
    return RunInterrupted(len(result.history), folder.commit())

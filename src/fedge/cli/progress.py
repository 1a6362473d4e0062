"""A rich progress bar with the current round and accuracy, and the final summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedge.engine import Callback, RunResult
from fedge.simulation.history import History, RoundRecord
from fedge.strategies.base import StrategyState


class ProgressCallback(Callback):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None

    def on_run_start(self, state: StrategyState, rounds: int) -> None:
        self.progress = Progress(
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("run", total=rounds, completed=state.round_num, status="")

    def on_round_end(self, record: RoundRecord, state: StrategyState) -> None:
        if self.progress is None:
            return
        acc = "" if math.isnan(record.test_accuracy) else f"acc {record.test_accuracy:.3f}"
        loss = "" if math.isnan(record.train_loss) else f"train loss {record.train_loss:.3f}"
        self.progress.update(self.task, advance=1, status=f"{acc}  {loss}".strip())

    def on_run_end(self, history: History, state: StrategyState) -> None:
        if self.progress is not None:
            self.progress.stop()


def _partition(d: Any) -> str:
    """How the clients' data was split, in words: the natural partition when the data has one."""
    if d.loader:
        return "from your loader"
    if d.dataset == "leaf":
        return "LEAF users"
    if d.dataset.startswith("synthetic"):
        return "one per device"
    if d.client_column:
        return f"one per {d.client_column!r}"
    if d.dataset == "files" and d.path and Path(d.path).is_dir():
        return "one per file"
    return str(d.partition)


def _num_clients(exp: Any, out: Path) -> int:
    """The federation's real size, as the run folder's ``summary.json`` records it."""
    try:
        return int(json.loads((out / "summary.json").read_text())["num_clients"])
    except (OSError, ValueError, KeyError, TypeError):
        return int(exp.data.num_clients)


def print_summary(exp: Any, result: RunResult, out: Path) -> None:
    h = result.history
    table = Table(title="fedge run", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")  # a long output path wraps instead of being cut with "…"
    table.add_row("dataset", f"{exp.data.dataset} ({_num_clients(exp, out)} clients, {_partition(exp.data)})")
    model = exp.model.factory or f"{exp.model.name} ({exp.model.framework})"
    table.add_row("model / strategy", f"{model} / {exp.strategy.name}")
    table.add_row("rounds", str(len(h)))
    table.add_row("final test accuracy", f"{h.final_accuracy:.4f}")
    table.add_row("final test loss", f"{h.last('test_loss'):.4f}")
    up = sum(r.uplink_bytes for r in h)
    down = sum(r.downlink_bytes for r in h)
    table.add_row("bytes up / down", f"{up / 1e6:.2f} MB / {down / 1e6:.2f} MB")
    table.add_row("wall time", f"{sum(r.wall_s for r in h):.1f} s")
    if any("wan_bytes" in r.extra for r in h):  # a hierarchy: what each tier carried and spent
        from fedge.hierarchy import tier_totals

        t = tier_totals(h) or {}
        table.add_row("bytes LAN / WAN", f"{t['lan_bytes'] / 1e6:.2f} MB / {t['wan_bytes'] / 1e6:.2f} MB")
        table.add_row(
            "simulated time / energy",
            f"{t['sim_clock_s']:.1f} s / devices {t['device_energy_j']:.1f} J, gateways {t['gateway_energy_j']:.1f} J",
        )
    picks = [r.extra["backend"] for r in h if "backend" in r.extra]
    if picks:  # the auto backend says what it ran
        last = next(r for r in reversed(h.rounds) if "backend" in r.extra)
        table.add_row("backend", f"auto: {', '.join(sorted(set(picks)))} ({last.extra['backend_reason']})")
    if result.stopped_early:
        table.add_row("stopped early", result.stopped_early)
    table.add_row("output", str(out))
    Console().print(table)

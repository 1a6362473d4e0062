"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns a :class:`Plot`: PNG bytes, or ``png=None`` with a note when the run
did not record what the figure needs (no ε without DP, no simulated time without the
device simulation ...).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedge.report.runs import RunData

NOT_RECORDED = "not recorded in this run"
DEVICE_MIX_KEY = "device_mix"
"""``extra`` key of a round's device mix: ``{profile: clients}``; keys ``device_mix/<profile>`` also count."""


@dataclass
class Plot:
    name: str
    title: str
    png: bytes | None
    note: str = ""


def _figure(width: float = 7.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _png(fig: Any) -> bytes:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _lines(ax: Any, run: RunData, keys: Sequence[tuple[str, str]], x: str = "round") -> bool:
    drawn = False
    for key, label in keys:
        rounds, values = run.series(key)
        if not values:
            continue
        ax.plot(rounds, values, marker="." if len(values) < 40 else None, label=label)
        drawn = True
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def accuracy(run: RunData) -> Plot:
    fig, ax = _figure()
    ok = _lines(
        ax,
        run,
        [
            ("test_accuracy", "held-out test"),
            ("fed_test_accuracy", "clients' own test"),
            ("personal_acc_mean", "personal models, client mean"),
            ("personal_acc_worst10", "personal models, worst 10 %"),
            ("client_acc_worst10", "global model, worst 10 % of clients"),
        ],
    )
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy per round")
    return Plot("accuracy", "Accuracy per round", _png(fig) if ok else None, "" if ok else NOT_RECORDED)


def loss(run: RunData) -> Plot:
    fig, ax = _figure()
    ok = _lines(
        ax, run, [("train_loss", "train"), ("test_loss", "held-out test"), ("fed_test_loss", "clients' own test")]
    )
    ax.set_ylabel("loss")
    ax.set_title("loss per round")
    return Plot("loss", "Loss per round", _png(fig) if ok else None, "" if ok else NOT_RECORDED)


def time_unit(max_hours: float) -> tuple[float, str]:
    """A readable unit for a simulated span: (factor from hours, axis label)."""
    if max_hours < 2 / 60:
        return 3600.0, "simulated seconds"
    if max_hours < 2:
        return 60.0, "simulated minutes"
    return 1.0, "simulated hours"


def sim_time(run: RunData) -> Plot:
    hours = run.sim_hours()
    if hours is None:
        return Plot(
            "sim_time",
            "Accuracy and loss per simulated time",
            None,
            f"simulated time (sim_clock_s / sim_time_s) {NOT_RECORDED}",
        )
    fig, (a1, a2) = _figure(9.0, 3.6, ncols=2)
    factor, unit = time_unit(max(hours, default=0.0))
    by_round = {rec.round: h * factor for rec, h in zip(run.history, hours, strict=True)}
    for ax, keys, ylabel in (
        (a1, ("test_accuracy", "fed_test_accuracy"), "accuracy"),
        (a2, ("train_loss", "test_loss"), "loss"),
    ):
        for key in keys:
            rounds, values = run.series(key)
            if values:
                ax.plot([by_round[r] for r in rounds], values, label=key)
        ax.set_xlabel(unit)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"accuracy and loss against {unit}")
    return Plot("sim_time", "Accuracy and loss per simulated time", _png(fig))


MAX_BARS = 100
"""Per-round bar charts with more rounds than this aggregate the rounds into this many bins at most."""


def round_bins(rounds: Sequence[int], max_bars: int = MAX_BARS) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of consecutive rounds, at most ``max_bars`` of them.

    One bin per round up to ``max_bars`` rounds; past that, bins of ``ceil(n / max_bars)``
    rounds, so no bar is drawn thinner than a few pixels (thinner bars alias unevenly).
    """
    n = len(rounds)
    width = max(1, math.ceil(n / max_bars))
    return [(i, min(i + width, n)) for i in range(0, n, width)]


def stacked_bars(
    ax: Any, rounds: Sequence[int], layers: Sequence[tuple[str, Sequence[float]]], *, max_bars: int = MAX_BARS
) -> int:
    """Draws per-round stacked bars, binned past ``max_bars`` rounds; returns the bin width in rounds.

    A binned bar spans its rounds and shows their mean, so its height reads as per round.
    """
    bins = round_bins(rounds, max_bars)
    width = bins[0][1] - bins[0][0] if bins else 1
    lefts = [rounds[a] - 0.5 for a, _ in bins]
    widths = [rounds[b - 1] - rounds[a] + 1 for a, b in bins]
    bottom = [0.0] * len(bins)
    for label, values in layers:
        means = [sum(values[a:b]) / (b - a) for a, b in bins]
        ax.bar(lefts, means, width=widths, bottom=bottom, align="edge", label=label, linewidth=0)
        bottom = [x + m for x, m in zip(bottom, means, strict=True)]
    if rounds:
        ax.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
    return width


def _integer_counts(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _per_round(width: int) -> str:
    return "per round" if width == 1 else f"per round (mean of {width}-round bins)"


def participants(run: RunData) -> Plot:
    rounds = [r.round for r in run.history]
    reasons = sorted({k for r in run.history for k in r.dropped})
    fig, ax = _figure()
    layers: list[tuple[str, Sequence[float]]] = [("aggregated", [float(r.participants) for r in run.history])]
    layers += [(f"dropped: {reason}"[:60], [len(r.dropped.get(reason, [])) for r in run.history]) for reason in reasons]
    width = stacked_bars(ax, rounds, layers)
    _integer_counts(ax)
    ax.set_xlabel("round")
    ax.set_ylabel("clients")
    ax.set_title(f"participants and drop reasons {_per_round(width)}")
    _legend_outside(ax, len(layers))
    return Plot("participants", "Participants and drop reasons per round", _png(fig))


def byte_axis(axis: Any) -> None:
    """Byte counts with their unit (B, kB, MB, GB) on the tick labels and no offset or 1eN factor."""
    from matplotlib.ticker import EngFormatter, MaxNLocator

    axis.set_major_formatter(EngFormatter(unit="B", places=None, sep=" "))
    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def _legend_outside(ax: Any, entries: int) -> None:
    """A legend right of the axes (constrained layout makes room for it), so it never covers the bars."""
    if entries:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)


def traffic(run: RunData) -> Plot:
    fig, ax = _figure()
    rounds = [r.round for r in run.history]
    ax.plot(rounds, [r.uplink_bytes for r in run.history], label="uplink (clients → server)")
    ax.plot(rounds, [r.downlink_bytes for r in run.history], label="downlink (server → clients)", linestyle="--")
    ax.set_ylim(bottom=0)
    byte_axis(ax.yaxis)
    ax.set_xlabel("round")
    ax.set_ylabel("bytes per round")
    ax.set_title("bytes on the wire per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot("traffic", "Uplink and downlink bytes per round", _png(fig))


def _extra_series(run: RunData, key: str, name: str, title: str, ylabel: str) -> Plot:
    rounds, values = run.series(key)
    if not values:
        return Plot(name, title, None, f"{key} {NOT_RECORDED}")
    fig, ax = _figure()
    ax.plot(rounds, values, marker="." if len(values) < 40 else None)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return Plot(name, title, _png(fig))


def epsilon(run: RunData) -> Plot:
    return _extra_series(run, "epsilon", "epsilon", "Privacy spent (ε) per round", "ε (cumulative)")


def energy(run: RunData) -> Plot:
    return _extra_series(run, "energy_j", "energy", "Client energy per round", "joules")


def device_mix_of(extra: dict[str, Any]) -> dict[str, float]:
    mix: dict[str, float] = {}
    raw = extra.get(DEVICE_MIX_KEY)
    if isinstance(raw, dict):
        mix.update({str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)})
    prefix = DEVICE_MIX_KEY + "/"
    for k, v in extra.items():
        if k.startswith(prefix) and isinstance(v, int | float):
            mix[k[len(prefix) :]] = float(v)
    return mix


def device_mix(run: RunData) -> Plot:
    mixes = [device_mix_of(r.extra) for r in run.history]
    profiles = sorted({p for m in mixes for p in m})
    title = "Device mix per round"
    if not profiles:
        fleet = run.configured_fleet()
        if not fleet:
            return Plot("device_mix", title, None, f"device mix {NOT_RECORDED}")
        fig, ax = _figure()
        names = sorted(fleet)
        ax.barh(names, [fleet[n] for n in names], color="#2a9d8f")
        ax.set_xlabel("share of the fleet")
        ax.set_title("configured device mix ([devices] fleet)")
        return Plot(
            "device_mix",
            "Device mix of the fleet",
            _png(fig),
            "per-round mix not recorded in this run; the configured fleet shares are shown",
        )
    fig, ax = _figure()
    rounds = [r.round for r in run.history]
    width = stacked_bars(ax, rounds, [(p, [m.get(p, 0.0) for m in mixes]) for p in profiles])
    _integer_counts(ax)
    ax.set_xlabel("round")
    ax.set_ylabel("clients")
    ax.set_title(f"device mix of the round's clients {_per_round(width)}")
    _legend_outside(ax, len(profiles))
    return Plot("device_mix", title, _png(fig))


def fairness(run: RunData) -> Plot:
    accs = run.client_accuracy()
    title = "Per-client accuracy (fairness)"
    if not accs:
        return Plot("fairness", title, None, f"per-client accuracy {NOT_RECORDED} (set evaluation.federated_clients)")
    fig, ax = _figure()
    ax.hist(accs, bins=min(30, max(5, len(accs) // 3)), range=(0.0, 1.0), color="#264653")
    mean = sum(accs) / len(accs)
    worst = sorted(accs)[: max(1, math.ceil(0.1 * len(accs)))]
    ax.axvline(mean, color="#e76f51", label=f"mean {mean:.3f}")
    ax.axvline(
        sum(worst) / len(worst), color="#f4a261", linestyle="--", label=f"worst 10% mean {sum(worst) / len(worst):.3f}"
    )
    ax.set_xlabel("accuracy on the client's own test data")
    ax.set_ylabel("clients")
    ax.set_title(f"distribution of per-client accuracy ({len(accs)} clients)")
    ax.legend(fontsize=8)
    return Plot("fairness", title, _png(fig))


def partition(run: RunData) -> Plot:
    title = "Label distribution of the partition"
    hist = run.label_histogram
    if not hist or not hist[0]:
        return Plot("partition", title, None, f"partition {NOT_RECORDED}")
    import numpy as np

    counts = np.asarray(hist, dtype=np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    fig, ax = _figure(7.0, min(8.0, 2.0 + 0.04 * len(counts)))
    im = ax.imshow(share, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    names = run.label_names if run.label_names and len(run.label_names) == counts.shape[1] else None
    if counts.shape[1] <= 30 and names:
        ax.set_xticks(range(counts.shape[1]), labels=names, rotation=45, ha="right")
    elif counts.shape[1] <= 30:
        ax.set_xticks(range(counts.shape[1]))
    ax.set_xlabel("label")
    ax.set_ylabel("client")
    ax.set_title(f"share of each label in each client's training data ({len(counts)} clients)")
    fig.colorbar(im, ax=ax, label="share of client's examples")
    return Plot("partition", title, _png(fig))


SINGLE: tuple[Callable[[RunData], Plot], ...] = (
    accuracy,
    loss,
    sim_time,
    participants,
    traffic,
    epsilon,
    energy,
    device_mix,
    fairness,
    partition,
)


def _compare_lines(runs: Sequence[RunData], key: str, name: str, title: str, ylabel: str) -> Plot:
    fig, ax = _figure()
    drawn = False
    for run in runs:
        rounds, values = run.series(key)
        if values:
            ax.plot(rounds, values, label=run.name)
            drawn = True
    if not drawn:
        return Plot(name, title, None, f"{key} {NOT_RECORDED}s")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot(name, title, _png(fig))


def compare_sim_time(runs: Sequence[RunData]) -> Plot:
    title = "Accuracy per simulated time"
    fig, ax = _figure()
    drawn = False
    spans = [max(h, default=0.0) for r in runs if (h := r.sim_hours()) is not None]
    factor, unit = time_unit(max(spans, default=0.0))
    for run in runs:
        hours = run.sim_hours()
        if hours is None:
            continue
        by_round = {rec.round: h * factor for rec, h in zip(run.history, hours, strict=True)}
        rounds, values = run.series("test_accuracy")
        ax.plot([by_round[r] for r in rounds], values, label=run.name)
        drawn = True
    if not drawn:
        return Plot("compare_sim_time", title, None, f"simulated time {NOT_RECORDED}s")
    ax.set_xlabel(unit)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot("compare_sim_time", title, _png(fig))


def compare_traffic(runs: Sequence[RunData]) -> Plot:
    title = "Accuracy against cumulative uplink"
    fig, ax = _figure()
    drawn = False
    for run in runs:
        total, xs, ys = 0, [], []
        for rec in run.history:
            total += rec.uplink_bytes
            if not math.isnan(rec.test_accuracy):
                xs.append(total)
                ys.append(rec.test_accuracy)
        if ys:
            ax.plot(xs, ys, label=run.name)
            drawn = True
    if not drawn:
        return Plot("compare_traffic", title, None, f"test accuracy {NOT_RECORDED}s")
    byte_axis(ax.xaxis)
    ax.set_xlabel("cumulative uplink")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot("compare_traffic", title, _png(fig))


def compare_fairness(runs: Sequence[RunData]) -> Plot:
    title = "Per-client accuracy by run"
    have = [(r.name, r.client_accuracy()) for r in runs if r.client_accuracy()]
    if not have:
        return Plot("compare_fairness", title, None, f"per-client accuracy {NOT_RECORDED}s")
    fig, ax = _figure()
    ax.boxplot([a for _, a in have], tick_labels=[n for n, _ in have])
    ax.set_ylabel("accuracy on the client's own test data")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return Plot("compare_fairness", title, _png(fig))


def comparison(runs: Sequence[RunData]) -> list[Plot]:
    return [
        _compare_lines(runs, "test_accuracy", "compare_accuracy", "Accuracy per round", "accuracy"),
        _compare_lines(runs, "test_loss", "compare_loss", "Held-out loss per round", "loss"),
        compare_sim_time(runs),
        compare_traffic(runs),
        _compare_lines(runs, "epsilon", "compare_epsilon", "Privacy spent (ε) per round", "ε"),
        compare_fairness(runs),
    ]

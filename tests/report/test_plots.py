from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedge.report import plots
from fedge.report.runs import load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_every_plot_is_drawn_when_everything_was_recorded(rich_run: Path) -> None:
    run = load_run(rich_run)
    for make in plots.SINGLE:
        plot = make(run)
        assert plot.png is not None, plot.name
        assert plot.png.startswith(PNG_MAGIC)
        w, h = _size(plot.png)
        assert w >= 400 and h >= 150


def test_absent_values_say_not_recorded(real_run: Path) -> None:
    run = load_run(real_run)
    made = {p.name: p for p in (make(run) for make in plots.SINGLE)}
    for name in ("sim_time", "epsilon", "energy", "device_mix"):
        assert made[name].png is None
        assert plots.NOT_RECORDED in made[name].note
    for name in ("accuracy", "loss", "participants", "traffic", "fairness", "partition"):
        assert made[name].png is not None, name


def test_drop_reasons_and_device_mix_are_read(rich_run: Path) -> None:
    run = load_run(rich_run)
    assert plots.device_mix_of(run.history.rounds[0].extra) == {"zonal-controller": 5.0, "jetson-orin": 3.0}
    assert plots.device_mix_of({"device_mix/jetson": 2, "device_mix/zonal": 1.5, "other": 1}) == {
        "jetson": 2.0,
        "zonal": 1.5,
    }


def test_comparison_plots_only_what_some_run_recorded(rich_run: Path, real_run: Path) -> None:
    runs = [load_run(rich_run), load_run(real_run)]
    made = {p.name: p for p in plots.comparison(runs)}
    assert all(p.png is not None for p in made.values()), [n for n, p in made.items() if p.png is None]
    only_real = {p.name: p for p in plots.comparison([runs[1], runs[1]])}
    assert only_real["compare_sim_time"].png is None
    assert only_real["compare_epsilon"].png is None
    assert only_real["compare_accuracy"].png is not None


def test_configured_fleet_is_shown_when_no_round_recorded_its_mix(real_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "fleet"
    shutil.copytree(real_run, run_dir)
    (run_dir / "config.toml").write_text(
        'rounds = 3\n[devices]\nenabled = true\nfleet = { "zonal-ecu" = 0.7, "orin-nano" = 0.3 }\n'
    )
    plot = plots.device_mix(load_run(run_dir))
    assert plot.png is not None and "configured fleet" in plot.note
    assert load_run(run_dir).configured_fleet() == {"zonal-ecu": 0.7, "orin-nano": 0.3}


def test_time_unit_follows_the_span() -> None:
    assert plots.time_unit(10 / 3600) == (3600.0, "simulated seconds")
    assert plots.time_unit(0.5) == (60.0, "simulated minutes")
    assert plots.time_unit(30.0) == (1.0, "simulated hours")


def _axes() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def test_byte_axis_has_units_and_no_offset() -> None:
    fig, ax = _axes()
    ax.plot([1, 2, 3], [4_000_000, 4_000_100, 4_000_200])
    plots.byte_axis(ax.yaxis)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"-?[0-9.]+ (B|kB|MB|GB)", s) for s in labels), labels
    assert ax.yaxis.get_offset_text().get_text() == ""
    fig, ax = _axes()
    ax.plot([1, 2], [0, 2500])
    plots.byte_axis(ax.yaxis)
    fig.canvas.draw()
    assert "2 kB" in [t.get_text() for t in ax.get_yticklabels()]


def test_the_traffic_plot_labels_bytes_with_units(rich_run: Path) -> None:
    (ax,) = _drawn_axes(plots.traffic, load_run(rich_run))
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(s.endswith(("B", "kB", "MB")) for s in labels), labels
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_rounds_are_binned_past_the_bar_limit() -> None:
    assert plots.round_bins(list(range(1, 51))) == [(i, i + 1) for i in range(50)]
    bins = plots.round_bins(list(range(1, 1001)), max_bars=100)
    assert len(bins) == 100 and bins[0] == (0, 10) and bins[-1] == (990, 1000)
    covered = [i for a, b in bins for i in range(a, b)]
    assert covered == list(range(1000))
    assert len(plots.round_bins(list(range(1, 302)), max_bars=100)) <= 100


def test_stacked_bars_over_many_rounds_draw_at_most_the_limit(tmp_path: Path, make_rich_run: Any) -> None:
    rounds = list(range(1, 301))
    _, ax = _axes()
    width = plots.stacked_bars(ax, rounds, [("a", [4.0] * 300), ("b", [float(r % 2) for r in rounds])])
    assert width == 3
    assert len(ax.patches) == 2 * 100
    heights = {round(p.get_height(), 6) for p in ax.patches[100:]}
    assert heights == {round(1 / 3, 6), round(2 / 3, 6)}  # per-round means of the bins, not sums
    assert min(p.get_width() for p in ax.patches) == 3
    run = load_run(make_rich_run(tmp_path / "long", rounds=300))
    (ax,) = _drawn_axes(plots.participants, run)
    assert "3-round bins" in ax.get_title() and len(ax.patches) <= 2 * plots.MAX_BARS


def _drawn_axes(make: Any, run: Any) -> list[Any]:
    """The axes of the figure a plot function saves, as they were when it was saved."""
    from matplotlib.figure import Figure

    axes: list[Any] = []
    original = Figure.savefig

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        axes.extend(self.axes)
        return result

    Figure.savefig = spy  # type: ignore[method-assign]
    try:
        make(run)
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
    return axes

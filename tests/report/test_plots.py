from __future__ import annotations

from pathlib import Path

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

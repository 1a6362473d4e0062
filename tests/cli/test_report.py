from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fedge.cli.main import cli

TOML = """
seed = 2
rounds = 2
output = "{out}"
[data]
num_clients = 5
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = 2
local_epochs = 1
"""


def test_run_with_tensorboard_then_report(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tmp_path / "exp.toml"
    cfg.write_text(TOML.format(out=tmp_path / "run"))
    runner = CliRunner()
    res = runner.invoke(cli, ["run", str(cfg), "-q", "--tensorboard", str(tmp_path / "tb")])
    assert res.exit_code == 0, res.output
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("fedge/test_accuracy")] == [1, 2]

    res = runner.invoke(cli, ["report", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and "(5 plots)" in res.output
    assert (tmp_path / "run" / "report" / "accuracy.png").stat().st_size > 0


def test_report_of_a_corrupt_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = tmp_path / "broken"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"round": 1, "participants": 1}\n{"round": 2,\n')
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "metrics.jsonl:2" in lines[0]
    assert not (run / "report").exists()

from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.config.schema import Experiment
from fedge.experiment import run_experiment


def test_devices_lists_catalog_and_user_profiles(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(
        "[my-board]\nflops_fp32 = 3e9\nram_mib = 512\nuplink_mbps = 5\n"
        'downlink_mbps = 10\nlatency_ms = 40\npower_train_w = 2\ndescription = "mine"\n'
    )
    out = CliRunner().invoke(cli, ["devices", "--profiles", str(f)])
    assert out.exit_code == 0
    assert "pi-zero-2w" in out.output and "agx-orin" in out.output and "my-board" in out.output


def test_bad_profile_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[x]\nram_mib = 1\n")
    out = CliRunner().invoke(cli, ["devices", "--profiles", str(f)])
    assert out.exit_code == 2
    assert out.output.strip().count("\n") == 0 and "missing field(s) flops_fp32" in out.output


def test_tta_table_from_run_folders(tmp_path):
    exp = Experiment()
    exp.rounds = 2
    exp.data.num_clients = 8
    exp.model.framework = "numpy"
    exp.training.clients_per_round = 4
    exp.training.local_epochs = 1
    exp.section("devices").enabled = True
    _, out = run_experiment(exp, output=str(tmp_path / "run"))
    res = CliRunner().invoke(cli, ["devices", "tta", str(out), "--target", "0.01"])
    assert res.exit_code == 0, res.output
    assert "run" in res.output and "1.00x" in res.output

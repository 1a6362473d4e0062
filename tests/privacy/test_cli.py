"""``fedge privacy plan`` and ``fedge privacy epsilon`` as a user meets them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.privacy.accountant import epsilon_for


def test_plan_prints_the_noise_multiplier_that_meets_the_target() -> None:
    out = CliRunner().invoke(
        cli,
        [
            "privacy",
            "plan",
            "--epsilon",
            "3",
            "--delta",
            "1e-5",
            "--rounds",
            "200",
            "--clients-per-round",
            "100",
            "--population",
            "10000",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "noise multiplier z = 0.74" in out.output and "Poisson sampling" in out.output
    fixed = CliRunner().invoke(
        cli,
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "2",
            "--rounds",
            "5",
            "--clients-per-round",
            "10",
            "--population",
            "1000",
            "--sampling",
            "fixed",
            "--json",
        ],
    )
    data = json.loads(fixed.output)
    assert data["sampling"] == "fixed" and "without replacement" in data["assumption"]
    assert data["epsilon"] == pytest.approx(
        epsilon_for(2.0, delta=1e-5, rounds=5, cohort=10, population=1000, sampling="fixed")
    )


def test_epsilon_command_matches_the_library() -> None:
    out = CliRunner().invoke(
        cli,
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "1.1",
            "--rounds",
            "50",
            "--clients-per-round",
            "10",
            "--population",
            "1000",
            "--json",
        ],
    )
    assert out.exit_code == 0
    ref = epsilon_for(1.1, delta=1e-5, rounds=50, cohort=10, population=1000)
    assert json.loads(out.output)["epsilon"] == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--epsilon", "-1"], "epsilon must be a positive finite number, got -1.0"),
        (["plan", "--epsilon", "1", "--delta", "1"], "delta must be in (0, 1), got 1.0"),
        (["epsilon", "--noise-multiplier", "0"], "noise multiplier must be > 0 with DP on, got 0.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    common = ["--rounds", "10", "--clients-per-round", "10", "--population", "100"]
    out = CliRunner().invoke(cli, ["privacy", *args, *common])
    assert out.exit_code == 2
    assert out.output.strip() == f"error: {message}"

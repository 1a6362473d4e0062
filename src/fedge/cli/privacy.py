"""``fedge privacy``: plan the noise of a differentially private run, or compute its ε."""

from __future__ import annotations

import json

import click

_SAMPLING = click.Choice(["poisson", "fixed", "none"])
_ACCOUNTANT = click.Choice(["rdp", "pld"])


def _common(f: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(
        [
            click.option("--delta", type=float, default=1e-5, show_default=True, help="Target δ."),
            click.option("--rounds", type=int, required=True, help="Rounds of the run."),
            click.option(
                "--clients-per-round",
                "cohort",
                type=int,
                required=True,
                help="Clients per round (Poisson: the expected number).",
            ),
            click.option("--population", type=int, required=True, help="Clients in the population."),
            click.option(
                "--sampling",
                type=_SAMPLING,
                default=None,
                help="Sampling the accounting assumes  [default: poisson; none with --async].",
            ),
            click.option(
                "--async",
                "buffered",
                is_flag=True,
                help="An [async] (FedBuff) run: --rounds are applied steps, --clients-per-round the buffer "
                "size, no sampling amplification.",
            ),
            click.option(
                "--accountant", type=_ACCOUNTANT, default="rdp", show_default=True, help="dp-accounting accountant."
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        ]
    ):
        f = opt(f)
    return f


def _sampling(sampling: str | None, buffered: bool) -> str:
    """The sampling to account: ``none`` for an asynchronous run, which no other choice fits."""
    if buffered and sampling not in (None, "none"):
        raise click.UsageError(
            f"--async: buffers are filled by whoever finishes first, not a uniform sample, so --sampling "
            f"{sampling} does not hold; use --sampling none (the default with --async)"
        )
    return sampling or ("none" if buffered else "poisson")


def _assumption(sampling: str, cohort: int, population: int, buffered: bool = False) -> str:
    if buffered:
        return (
            f"an asynchronous run: every applied step sums a buffer of {cohort} updates with Gaussian noise, "
            f"each of {population} clients in a step at most once, no sampling amplification (add/remove-one client)"
        )
    if sampling == "none":
        return (
            f"no sampling amplification: any of {population} clients may be in every round, "
            "at most once (add/remove-one client)"
        )
    if sampling == "poisson":
        return (
            f"Poisson sampling: each of {population} clients joins each round independently "
            f"with rate q = {cohort / population:.6g} (add/remove-one client)"
        )
    return (
        f"fixed-size sampling: exactly {cohort} of {population} clients per round, uniformly "
        "without replacement (replace-one client)"
    )


def register(cli: click.Group) -> None:
    @cli.group("privacy")
    def privacy() -> None:
        """Differential privacy: plan noise for a budget, or compute ε of a run."""

    @privacy.command("plan")
    @click.option("--epsilon", type=float, required=True, help="Target ε.")
    @_common
    def plan_cmd(
        epsilon: float,
        delta: float,
        rounds: int,
        cohort: int,
        population: int,
        sampling: str | None,
        buffered: bool,
        accountant: str,
        as_json: bool,
    ) -> None:
        """Print the smallest noise multiplier z that keeps the run (ε, δ)-DP."""
        from fedge.privacy.accountant import epsilon_for, plan_noise

        sampling = _sampling(sampling, buffered)
        z = plan_noise(
            epsilon=epsilon,
            delta=delta,
            rounds=rounds,
            cohort=cohort,
            population=population,
            sampling=sampling,  # type: ignore[arg-type]
            accountant=accountant,  # type: ignore[arg-type]
        )
        eps = epsilon_for(
            z,
            delta=delta,
            rounds=rounds,
            cohort=cohort,
            population=population,
            sampling=sampling,  # type: ignore[arg-type]
            accountant=accountant,  # type: ignore[arg-type]
        )
        out = {
            "noise_multiplier": z,
            "epsilon": eps,
            "target_epsilon": epsilon,
            "delta": delta,
            "rounds": rounds,
            "clients_per_round": cohort,
            "population": population,
            "sampling": sampling,
            "accountant": accountant,
            "asynchronous": buffered,
            "assumption": _assumption(sampling, cohort, population, buffered),
        }
        if as_json:
            click.echo(json.dumps(out))
            return
        unit = "applied steps" if buffered else "rounds"
        click.echo(
            f"noise multiplier z = {z:.4f}  (ε = {eps:.4f} ≤ {epsilon:g} at δ = {delta:g} "
            f"after {rounds} {unit}, {accountant.upper()} accountant)"
        )
        click.echo(f"assumes {out['assumption']}")
        click.echo(f"noise stddev on the mean update = z·C / {cohort} for clipping bound C")

    @privacy.command("epsilon")
    @click.option("--noise-multiplier", "z", type=float, required=True, help="Noise multiplier z.")
    @_common
    def epsilon_cmd(
        z: float,
        delta: float,
        rounds: int,
        cohort: int,
        population: int,
        sampling: str | None,
        buffered: bool,
        accountant: str,
        as_json: bool,
    ) -> None:
        """Print ε(δ) of a run with noise multiplier z."""
        from fedge.privacy.accountant import check_epsilon_delta, epsilon_for

        sampling = _sampling(sampling, buffered)
        check_epsilon_delta(None, delta)
        if rounds < 1:
            raise click.BadParameter("must be >= 1", param_hint="--rounds")
        eps = epsilon_for(
            z,
            delta=delta,
            rounds=rounds,
            cohort=cohort,
            population=population,
            sampling=sampling,  # type: ignore[arg-type]
            accountant=accountant,  # type: ignore[arg-type]
        )
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "epsilon": eps,
                        "noise_multiplier": z,
                        "delta": delta,
                        "rounds": rounds,
                        "sampling": sampling,
                        "accountant": accountant,
                        "asynchronous": buffered,
                        "assumption": _assumption(sampling, cohort, population, buffered),
                    }
                )
            )
            return
        click.echo(
            f"ε = {eps:.4f} at δ = {delta:g} after {rounds} rounds with z = {z:g} ({accountant.upper()} accountant)"
        )
        click.echo(f"assumes {_assumption(sampling, cohort, population, buffered)}")

"""``fedge finetune`` (federated LoRA fine-tuning from an experiment file) and
``fedge generate`` (sample from a run's base model plus its aggregated adapter)."""

from __future__ import annotations

from pathlib import Path

import click

from fedge.core.errors import ConfigError


def register(cli: click.Group) -> None:
    cli.add_command(finetune_cmd)
    cli.add_command(generate_cmd)


@click.command("finetune")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rounds", type=int, help="Override the number of rounds.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: the config's `output`).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def finetune_cmd(config: Path, rounds: int | None, output: Path | None, quiet: bool) -> None:
    """Federated LoRA fine-tuning of a causal language model.

    CONFIG is an experiment TOML with an ``[llm]`` section (base model, LoRA rank and
    target modules, text data); ``[strategy]`` (e.g. lora-fedavg, flexlora),
    ``[training]`` and ``rounds`` apply as for `fedge run`.
    """
    from fedge.cli.progress import ProgressCallback
    from fedge.config import load
    from fedge.llm.run import run_experiment

    exp = load(str(config))
    if rounds is not None:
        if rounds < 1:
            raise click.BadParameter("must be >= 1", param_hint="--rounds")
        exp.rounds = rounds
    if not exp.section("llm").enabled:
        raise ConfigError(f"{config}: set enabled = true in its [llm] section to fine-tune a language model")
    callbacks = [] if quiet else [ProgressCallback()]
    _, out, summary = run_experiment(exp, callbacks, output=str(output) if output else None)
    before, after = summary["perplexity_base"], summary["perplexity_final"]
    click.echo(f"held-out perplexity: base {before['global']:.2f} -> federated adapter {after['global']:.2f}")
    own = summary.get("perplexity_personalised")
    if own:
        click.echo(f"after local fine-tuning of the federated adapter: {own['global']:.2f}")
    for cid in sorted(before["clients"], key=int):
        tail = f" -> personalised {own['clients'][cid]:.2f}" if own else ""
        click.echo(f"  client {cid}: {before['clients'][cid]:.2f} -> {after['clients'][cid]:.2f}{tail}")
    click.echo(
        f"adapter {summary['adapter_bytes']} bytes sent per client per round "
        f"(frozen base: {summary['base_bytes']} bytes, never sent)"
    )
    click.echo(f"wrote {out}")


@click.command("generate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--prompt", "-p", required=True, help="Text to continue.")
@click.option("--max-new-tokens", type=int, default=40, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="0 = no top-k filtering.")
@click.option("--seed", type=int, default=0, show_default=True)
def generate_cmd(run_dir: Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int, seed: int) -> None:
    """Sample from RUN_DIR's base model plus its aggregated LoRA adapter."""
    from fedge.llm.run import generate

    click.echo(
        generate(run_dir, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    )

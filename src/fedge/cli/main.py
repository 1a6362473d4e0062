"""The ``fedge`` command line: thin — parse, build objects, call the library.

Every error fedge raises on purpose is printed as one line and exits with code 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedge.core.errors import FedgeError

if TYPE_CHECKING:
    from fedge.plugins import Command

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class FedgeGroup(click.Group):
    """Turns a :class:`FedgeError`, or a missing optional package, into one line on stderr and exit code 2.

    The subcommands of :data:`fedge.plugins.PLUGINS` and :data:`fedge.plugins.CORE_COMMANDS`
    are imported when they run; ``--help`` lists them with the one line the table gives.
    """

    def _table(self) -> dict[str, Command]:
        from fedge.plugins import registry

        return {c.name: c for c, _ in registry.commands()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._table()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and (entry := self._table().get(cmd_name)) is not None:
            importlib.import_module(entry.module).register(self)
            for cmd in self.commands.values():
                _full_short_help(cmd)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        table = self._table()
        rows = [(name, table[name].help) for name in table if name not in self.commands]
        rows += [(name, cmd.get_short_help_str(limit=sys.maxsize)) for name, cmd in self.commands.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FedgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click.UsageError as exc:
            where = f"fedge {exc.ctx.command_path.partition(' ')[2]}".rstrip() if exc.ctx else "fedge"
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ModuleNotFoundError as exc:
            from fedge.core.extras import missing_message

            message = missing_message(exc.name or "")
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=FedgeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="fedge")
def cli() -> None:
    """fedge: federated learning for edge devices."""


@cli.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rounds", type=int, help="Override the number of rounds.")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),  # a file there is refused by claim_output, in one line
    help="Output folder (default: the config's `output`).",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier fedge run in the output folder.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--backend", help="Execution backend: debug, sequential, vectorized, processes, ray or auto.")
@click.option("--seed", type=int, help="Override the seed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--dashboard", is_flag=True, help="Serve the live dashboard (address, port: [dashboard]).")
@click.option("--tensorboard", type=click.Path(file_okay=False), help="Write TensorBoard scalars to DIR.")
def run_cmd(
    config: Path | None,
    rounds: int | None,
    output: Path | None,
    overwrite: bool,
    overrides: tuple[str, ...],
    backend: str | None,
    seed: int | None,
    quiet: bool,
    dashboard: bool = False,
    tensorboard: str | None = None,
) -> None:
    """Run a federated experiment in simulation.

    With no CONFIG: the embedded default — scikit-learn's handwritten digits over 100
    clients with Dirichlet(0.5) label skew, a small MLP in NumPy (no PyTorch needed;
    --set model.framework=torch for the PyTorch one), FedAvg. With CONFIG: an
    experiment TOML file (write a commented one with `fedge init`).
    """
    from fedge.cli.progress import ProgressCallback, print_summary
    from fedge.config import embedded_default, load
    from fedge.config.overrides import apply_overrides
    from fedge.experiment import RunInterrupted, run_experiment

    exp = apply_overrides(load(str(config)) if config else embedded_default(), overrides)
    if rounds is not None:
        if rounds < 1:
            raise click.BadParameter("must be >= 1", param_hint="--rounds")
        exp.rounds = rounds
    if backend is not None:
        exp.training.backend = backend
    if seed is not None:
        exp.seed = seed
    if dashboard:
        exp.section("dashboard").enabled = True
    if tensorboard:
        exp.section("tracking").tensorboard = tensorboard
    callbacks = [] if quiet else [ProgressCallback()]
    try:
        result, out = run_experiment(exp, callbacks, output=str(output) if output else None, overwrite=overwrite)
    except KeyboardInterrupt as stop:
        done = stop.out if isinstance(stop, RunInterrupted) else None
        where = f"; the finished rounds are in {done} (marked partial)" if done else "; nothing was written"
        click.echo(f"interrupted{where}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    print_summary(exp, result, out)
    if "fedge.report.dashboard" in sys.modules:  # the finished run's dashboard may linger ([dashboard] linger_s)
        from fedge.report.dashboard import linger_finished

        linger_finished()


@cli.command("init")
@click.argument("path", required=False, default="experiment.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(path: Path, force: bool) -> None:
    """Write a commented example experiment file (every key, its default and meaning)."""
    from fedge.config import Experiment, to_toml
    from fedge.plugins import registry

    registry.load_all()  # the file documents every section, those of the optional parts included
    if path.exists() and not force:
        raise FedgeError(f"{path} exists; pass --force to overwrite it")
    path.write_text("# fedge experiment: every key is shown with its default.\n" + to_toml(Experiment()))
    click.echo(f"wrote {path}")


def _full_short_help(cmd: click.Command) -> None:
    """Give a command, and each of its subcommands, the whole first sentence of its help as its line in ``--help``.

    Click otherwise cuts that line to the terminal's width with "..."; the formatter wraps
    a long sentence onto the next lines instead.
    """
    if not cmd.short_help:
        cmd.short_help = cmd.get_short_help_str(limit=sys.maxsize)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _full_short_help(sub)


for _cmd in cli.commands.values():
    _full_short_help(_cmd)


def main() -> None:
    cli(prog_name="fedge")


if __name__ == "__main__":
    main()

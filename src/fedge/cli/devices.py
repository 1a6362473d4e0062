"""``fedge devices``: list the device catalog; ``fedge devices tta``: time-to-accuracy table."""

from __future__ import annotations

from pathlib import Path

import click


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


@click.group("devices", invoke_without_command=True)
@click.option(
    "--profiles",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Your own device profile TOML file, shown with the catalog.",
)
@click.pass_context
def devices_cmd(ctx: click.Context, profiles: Path | None) -> None:
    """List the device catalog (edge device profiles for the simulation)."""
    if ctx.invoked_subcommand is not None:
        return
    from fedge.devices.profiles import catalog

    cat = catalog(profiles)
    click.echo(
        f"{'name':<16} {'fp32':>11} {'int8':>11} {'RAM':>9} {'up/down Mb/s':>13} "
        f"{'lat ms':>6} {'power W':>7}  description"
    )
    for name, p in sorted(cat.items()):
        click.echo(
            f"{name:<16} {_si(p.flops_fp32, 'FLOP/s'):>11} {_si(p.flops_int8, 'OP/s'):>11} "
            f"{p.ram_mib:>5g} MiB {f'{p.uplink_mbps:g}/{p.downlink_mbps:g}':>13} "
            f"{p.latency_ms:>6g} {p.power_train_w:>7g}  {p.description}"
        )


@devices_cmd.command("tta")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", type=float, default=0.9, show_default=True, help="Target test accuracy.")
def tta_cmd(runs: tuple[Path, ...], target: float) -> None:
    """Simulated hours and energy to reach TARGET accuracy, one row per run folder."""
    from fedge.devices.report import time_to_target, tta_table
    from fedge.simulation.history import read_jsonl

    results = {r.name: time_to_target(read_jsonl(r / "metrics.jsonl"), target) for r in runs}
    click.echo(tta_table(results, target, baseline=runs[0].name))


def register(cli: click.Group) -> None:
    cli.add_command(devices_cmd)

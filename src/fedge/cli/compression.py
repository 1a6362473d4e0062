"""``fedge export``: a run's model, pruned and quantised, as ONNX, LiteRT or ExecuTorch, checked in that runtime."""

from __future__ import annotations

from pathlib import Path

import click

from fedge.export.formats import FORMATS
from fedge.export.onnx_io import QUANTIZE_MODES
from fedge.export.prune import NORMS


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="onnx",
    show_default=True,
    help="onnx (ONNX Runtime), litert (.tflite, LiteRT) or executorch (.pte, XNNPACK); checked in that runtime.",
)
@click.option("--device", help="Device profile from the catalog (e.g. orin-nano, pi4; see `fedge devices`).")
@click.option("--profiles", type=click.Path(dir_okay=False), help="Your own device profile TOML file.")
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE_MODES),
    default="int8",
    show_default=True,
    help="int8 = static, calibrated on clients' data; dynamic = int8 weights only.",
)
@click.option(
    "--prune",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of each hidden layer's neurons/channels to remove, in [0, 1).",
)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default="l1",
    show_default=True,
    help="Rank units by the L1 or L2 norm of their weights.",
)
@click.option(
    "--finetune-rounds",
    type=int,
    default=0,
    show_default=True,
    help="Federated fine-tuning rounds after pruning (mlp models).",
)
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Output folder (default: RUN_DIR/export).")
def export_cmd(
    run_dir: Path,
    fmt: str,
    device: str | None,
    profiles: str | None,
    quantize: str,
    prune: float,
    norm: str,
    finetune_rounds: int,
    output: str | None,
) -> None:
    """Export RUN_DIR's model to ONNX, LiteRT or ExecuTorch: prune, quantise, check and report.

    Writes model.onnx (or model.tflite, model.pte), report.json and report.txt: size,
    parameters, accuracy before and after on the run's held-out data (in the format's own
    runtime), latency per sample on this machine, the memory fit on every catalog device,
    and, with --device, the detailed estimate for that device.
    """
    from fedge.export.run import ExportOptions, export_run

    report, out = export_run(
        run_dir,
        ExportOptions(
            device=device,
            quantize=quantize,
            prune=prune,
            norm=norm,
            finetune_rounds=finetune_rounds,
            output=output,
            profiles=profiles,
            format=fmt,
        ),
    )
    click.echo(report.to_text().rstrip())
    click.echo(f"wrote {out / report.model_file}, {out / 'report.json'}, {out / 'report.txt'}")


def register(cli: click.Group) -> None:
    cli.add_command(export_cmd)

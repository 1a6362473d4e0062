"""``fedge report``: an HTML report (and PNGs) of one run, or a comparison of several."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    @cli.command("report")
    @click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--output",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for report.html and the PNGs (default: RUN_DIR/report, or ./fedge-report for several runs).",
    )
    def report_cmd(run_dirs: tuple[Path, ...], output: Path | None) -> None:
        """Write a self-contained HTML report of RUN_DIR (two or more: a comparison)."""
        from fedge.report.html import write_report

        path = write_report(list(run_dirs), output)
        pngs = sorted(p.name for p in path.parent.glob("*.png"))
        click.echo(f"wrote {path} ({len(pngs)} plots)")

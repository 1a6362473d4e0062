"""``fedge report``: one self-contained HTML file plus the PNGs it embeds.

The HTML carries its images as base64 ``data:`` URIs and no scripts or external links, so
it opens from disk with no server and no network. The output folder is written to a
temporary sibling and renamed into place: a failed report leaves nothing half-written.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from fedge.core.errors import DataError
from fedge.core.files import atomic_folder
from fedge.report import plots, tree
from fedge.report.header import settings_rows
from fedge.report.plots import Plot
from fedge.report.runs import RunData, load_run

REPORT_FILE = "report.html"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
.cols { display: flex; flex-wrap: wrap; gap: 0 3em; } .cols h3 { margin: .4em 0; }
figure { margin: 1em 0; } img { max-width: 100%; } .note { color: #777; font-style: italic; }
svg.tree { max-width: 100%; height: auto; }
"""


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _summary_rows(run: RunData) -> list[tuple[str, str]]:
    h = run.history
    rows = [
        ("dataset", run.dataset or "–"),
        ("rounds", str(len(h))),
        ("final test accuracy", _fmt(h.final_accuracy)),
        (
            "best test accuracy",
            _fmt(max((r.test_accuracy for r in h if not math.isnan(r.test_accuracy)), default=math.nan)),
        ),
        ("final test loss", _fmt(h.last("test_loss"))),
        (
            "uplink / downlink",
            f"{sum(r.uplink_bytes for r in h) / 1e6:.3f} MB / {sum(r.downlink_bytes for r in h) / 1e6:.3f} MB",
        ),
        ("dropped clients", str(sum(r.failed for r in h))),
        ("wall time", f"{sum(r.wall_s for r in h):.2f} s"),
    ]
    eps = h.last("epsilon")
    if not math.isnan(eps):
        rows.append(("final ε", _fmt(eps)))
    if run.summary.get("stopped_early"):
        rows.append(("stopped early", str(run.summary["stopped_early"])))
    return rows


def _population(run: RunData) -> int | None:
    """The number of clients the run really had: its summary's count, else its partition's."""
    n = run.summary.get("num_clients")
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    return len(run.label_histogram) if run.label_histogram else None


def _table(rows: Sequence[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _figure(plot: Plot, filename: str) -> str:
    head = f"<h3>{html.escape(plot.title)}</h3>"
    if plot.png is None:
        return f'<figure id="{plot.name}">{head}<p class="note">{html.escape(plot.note)}</p></figure>'
    data = base64.b64encode(plot.png).decode("ascii")
    if plot.note:
        head += f'<p class="note">{html.escape(plot.note)}</p>'
    return (
        f'<figure id="{plot.name}">{head}<img class="plot" alt="{html.escape(plot.title)}" '
        f'data-file="{html.escape(filename)}" src="data:image/png;base64,{data}"></figure>'
    )


def render(runs: Sequence[RunData]) -> tuple[str, dict[str, bytes]]:
    """The HTML text and ``{png file name: bytes}`` for one run or a comparison of several."""
    pngs: dict[str, bytes] = {}
    body: list[str] = []
    multi = len(runs) > 1
    title = ("fedge comparison: " + ", ".join(r.name for r in runs)) if multi else f"fedge run: {runs[0].name}"
    body.append(f"<h1>{html.escape(title)}</h1>")
    if multi:
        body.append("<h2>Comparison</h2>")
        for plot in plots.comparison(runs):
            name = f"{plot.name}.png"
            if plot.png is not None:
                pngs[name] = plot.png
            body.append(_figure(plot, name))
    for i, run in enumerate(runs):
        prefix = f"{i + 1:02d}-{run.name}-" if multi else ""
        body.append(f"<h2>{html.escape(run.name)}</h2><p>{html.escape(str(run.path))}</p>")
        settings = settings_rows(run.config, num_clients=_population(run))
        if settings:
            body.append(f'<div class="cols"><div><h3>Settings</h3>{_table(settings)}</div>')
            body.append(f"<div><h3>Results</h3>{_table(_summary_rows(run))}</div></div>")
        else:
            body.append(_table(_summary_rows(run)))
        body.append(tree.section(run))
        for make in plots.SINGLE:
            plot = make(run)
            name = f"{prefix}{plot.name}.png"
            if plot.png is not None:
                pngs[name] = plot.png
            body.append(_figure(plot, name))
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return page, pngs


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Read the run folders and write ``report.html`` and the PNGs into ``out``.

    ``out`` defaults to ``RUN_DIR/report`` for one run and ``./fedge-report`` for several.
    Returns the path of the HTML file.
    """
    if not run_dirs:
        raise DataError("no run folders given")
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names) and len({r.path.resolve() for r in runs}) != len(runs):
        raise DataError("the same run folder is given twice")
    target = Path(out) if out else (runs[0].path / "report" if len(runs) == 1 else Path("fedge-report"))
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise DataError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / REPORT_FILE).exists():
        raise DataError(f"{target}: a non-empty folder that holds no earlier report; choose another --output")
    page, pngs = render(runs)
    with atomic_folder(target, kind="report", overwrite=True) as tmp:
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
        (tmp / REPORT_FILE).write_text(page, encoding="utf-8")
    return target / REPORT_FILE

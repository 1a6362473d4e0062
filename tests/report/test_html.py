from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fedge.core.errors import DataError
from fedge.report import plots
from fedge.report.html import REPORT_FILE, write_report


@pytest.fixture(scope="module")
def comparison(real_run: Path, tmp_path_factory: pytest.TempPathFactory, make_rich_run: Any) -> Path:
    """One comparison report of a rich run and a real run, shared by the tests that read it."""
    rich = make_rich_run(tmp_path_factory.mktemp("cmp") / "rich")
    return write_report([rich, real_run], rich.parent / "cmp")


def test_single_run_report_embeds_every_png(rich_run: Path) -> None:
    html_path = write_report([rich_run])
    assert html_path == rich_run / "report" / REPORT_FILE
    text = html_path.read_text()
    pngs = sorted(p.name for p in html_path.parent.glob("*.png"))
    assert len(pngs) == 10
    assert sorted(re.findall(r'data-file="([^"]+)"', text)) == pngs
    assert text.count('src="data:image/png;base64,') == len(pngs)
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_missing_values_are_announced_not_drawn(real_run: Path, tmp_path: Path) -> None:
    text = write_report([real_run], tmp_path / "out").read_text()
    assert text.count("not recorded in this run") == 4
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_comparison_of_two_runs(comparison: Path) -> None:
    html_path = comparison
    names = {p.name for p in html_path.parent.glob("*.png")}
    assert {"compare_accuracy.png", "compare_loss.png", "compare_traffic.png"} <= names
    assert any(n.startswith("01-rich-") for n in names) and any(n.startswith("02-tiny-") for n in names)


def test_rewrites_its_own_report_but_never_an_unrelated_folder(
    rich_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "SINGLE", (plots.participants,))
    write_report([rich_run])
    (rich_run / "report" / "stale.png").write_bytes(b"old")
    write_report([rich_run])
    assert not (rich_run / "report" / "stale.png").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(DataError, match="holds no earlier report"):
        write_report([rich_run], precious)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_bad_run_leaves_no_output(rich_run: Path, tmp_path: Path) -> None:
    (rich_run / "metrics.jsonl").write_text('{"round": 1, "participants": 2}\n{oops\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2"):
        write_report([rich_run], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.integration
def test_every_plot_renders_in_headless_chromium(comparison: Path, browser: Any) -> None:
    html_path = comparison
    browser.get(html_path.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.dataset.file, i.complete, i.naturalWidth]);"
    )
    assert len(images) == len(list(html_path.parent.glob("*.png"))) >= 20
    for name, complete, width in images:
        assert complete and width > 0, name

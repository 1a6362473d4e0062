"""The README's Python example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 20
    out = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    acc = float(re.search(r"accuracy ([0-9.]+)", out.stdout).group(1))
    assert acc > 0.8
    assert (tmp_path / "global.npz").exists()


def test_readme_opens_with_two_commands() -> None:
    text = README.read_text()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert "fedge run" in bash[0] and "pip install" in bash[0]
    assert "scripts/test.sh" in bash[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_first_command_installs_the_light_run_extra() -> None:
    import tomllib

    first = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert re.search(r'-e "\.\[run\]"', first), first
    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in extras["run"]}
    assert names == {"scikit-learn"}  # the default federation trains the NumPy MLP: no PyTorch
    assert '".[all,dev]"' in (README.parent / "scripts" / "test.sh").read_text()
    for extra in extras:
        assert f"- `{extra}` —" in README.read_text() or extra == "dev", f"extra {extra!r} is not listed in the README"


def test_readme_links_point_at_files_in_the_repo() -> None:
    text = README.read_text()
    assert "BENCHMARKS.md" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (README.parent / target).exists(), target

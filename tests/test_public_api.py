"""The public surface stays small, sorted and importable."""

from __future__ import annotations

import fedge


def test_all_is_sorted_and_unique() -> None:
    assert list(fedge.__all__) == sorted(fedge.__all__)
    assert len(set(fedge.__all__)) == len(fedge.__all__)


def test_every_public_name_exists() -> None:
    for name in fedge.__all__:
        assert hasattr(fedge, name), name


def test_nothing_public_is_left_out() -> None:
    public = {n for n in vars(fedge) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(fedge, n)).__name__ == "module"}
    assert public - modules <= set(fedge.__all__), public - modules - set(fedge.__all__)

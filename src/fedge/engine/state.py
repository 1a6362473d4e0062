"""The whole state of a run between two rounds, as one object a checkpoint saves and restores.

A run's server side is more than the strategy's parameters and moments: the central-DP
transform's accountant (its ε) and adaptive clipping bound, every other transform's
server-side state (:meth:`~fedge.pipeline.Transform.state_dict`), and a served run's
influence window (:class:`~fedge.strategies.influence.InfluenceBound`). A
:class:`RoundState` holds all of it after a round; :func:`fedge.engine.run` resumed from
one continues exactly as the uninterrupted run would, the same model and the same ε.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.core.errors import ConfigError
from fedge.pipeline import Pipeline, Transform
from fedge.strategies.base import StrategyState
from fedge.strategies.influence import InfluenceBound


def _copy_strategy(state: StrategyState) -> StrategyState:
    """A copy that later rounds cannot change (arrays included)."""
    return StrategyState(
        params=[np.array(p, copy=True) for p in state.params],
        round_num=state.round_num,
        slots={k: [np.array(p, copy=True) for p in v] for k, v in state.slots.items()},
        scalars=dict(state.scalars),
    )


@dataclass(frozen=True)
class RoundState:
    """The strategy state, every transform's state and the influence window after round ``round_num``.

    ``transforms`` is one ``{"name": ..., "state": ...}`` per pipeline transform, in pipeline
    order (``state`` is None for a transform with nothing to keep); ``influence`` is the
    influence bound's window as ``[client id, norm, count]`` rows, or None without a bound.
    Both are JSON-able, so a checkpoint stores them as they are.
    """

    strategy: StrategyState
    transforms: tuple[dict[str, Any], ...] = ()
    influence: tuple[tuple[float, float, float], ...] | None = None

    @property
    def round_num(self) -> int:
        """The last round this state includes (0: before the first)."""
        return self.strategy.round_num

    @classmethod
    def capture(
        cls, strategy: StrategyState, pipeline: Pipeline | Sequence[Transform], bound: InfluenceBound | None = None
    ) -> RoundState:
        """A snapshot of the run now; later rounds do not change it."""
        return cls(
            strategy=_copy_strategy(strategy),
            transforms=tuple(transform_states(_transforms(pipeline))),
            influence=None if bound is None else tuple((r[0], r[1], r[2]) for r in bound.state_dict()),
        )

    @classmethod
    def stored(
        cls,
        strategy: StrategyState,
        transforms: Sequence[dict[str, Any]] | None,
        influence: Sequence[Sequence[float]] | None,
    ) -> RoundState:
        """A state read back from a checkpoint's parts (None: that part was not stored)."""
        return cls(
            strategy=strategy,
            transforms=tuple(copy.deepcopy(list(transforms or []))),
            influence=None if influence is None else tuple((float(a), float(b), float(c)) for a, b, c in influence),
        )

    def restore(self, pipeline: Pipeline | Sequence[Transform], bound: InfluenceBound | None = None) -> StrategyState:
        """Put the transforms' states and the influence window into a freshly built run; return its strategy state.

        The pipeline must have the same transforms in the same order as the run that was
        captured; a state without transform states (an older checkpoint) leaves them as built.
        """
        if self.transforms:
            restore_transforms(_transforms(pipeline), list(self.transforms))
        if bound is not None and self.influence is not None:
            bound.load_state_dict([list(r) for r in self.influence])
        return _copy_strategy(self.strategy)

    def window(self) -> list[list[float]] | None:
        """The influence window in the form :meth:`InfluenceBound.state_dict` gives it."""
        return None if self.influence is None else [list(r) for r in self.influence]


def _transforms(pipeline: Pipeline | Sequence[Transform]) -> list[Transform]:
    return list(pipeline.transforms) if isinstance(pipeline, Pipeline) else list(pipeline)


def transform_states(transforms: Sequence[Transform]) -> list[dict[str, Any]]:
    """Each transform's name and checkpoint state, in pipeline order."""
    return [{"name": t.name, "state": copy.deepcopy(t.state_dict())} for t in transforms]


def restore_transforms(transforms: Sequence[Transform], stored: list[Any] | None) -> None:
    """Put the checkpointed states back into a resumed run's transforms (same pipeline, same order)."""
    if stored is None:
        return
    names = [t.name for t in transforms]
    if [s.get("name") for s in stored] != names:
        raise ConfigError(
            f"the stored run's pipeline was {[s.get('name') for s in stored]}, this one is {names}; "
            "resume with the same sections"
        )
    for t, s in zip(transforms, stored, strict=True):
        if s.get("state") is not None:
            t.load_state_dict(copy.deepcopy(s["state"]))

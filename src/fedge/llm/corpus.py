"""A synthetic per-client text corpus in which every client writes in its own style.

Each client is one writer: a topic (voice commands to a car, a technician's notes, a
cook's recipe steps, weather reports ...), a fixed set of favourite phrases and a
surface style (lower case, upper case, terse, chatty). The same generator, seed and
client id always give the same text, so runs are reproducible; the styles differ
enough that a model fitted to the pooled text is worse on each writer than one
adapted to them, which is the situation federated personalisation is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.core.errors import DataError

_TOPICS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "car": (
        ["turn", "set", "call", "play", "navigate to", "open", "close", "find"],
        [
            "the left lane",
            "the heater",
            "mom",
            "some jazz",
            "the nearest fuel station",
            "the sunroof",
            "the windows",
            "a parking spot",
            "the radio",
            "home",
        ],
        ["now", "please", "in two minutes", "at the next exit", "quietly", "right away"],
    ),
    "repair": (
        ["replaced", "checked", "tightened", "cleaned", "measured", "inspected", "reset"],
        [
            "the pump seal",
            "valve seven",
            "the drive belt",
            "the pressure gauge",
            "the filter housing",
            "bearing two",
            "the control board",
            "the fan motor",
        ],
        ["no leaks found", "within tolerance", "needs follow up", "ok", "worn, swap next visit"],
    ),
    "recipe": (
        ["whisk", "chop", "simmer", "season", "fold in", "bake", "stir", "slice"],
        [
            "the onions",
            "two eggs",
            "the butter",
            "a pinch of salt",
            "the flour",
            "the tomatoes",
            "fresh basil",
            "the garlic",
        ],
        ["for ten minutes", "until golden", "gently", "over low heat", "to taste"],
    ),
    "weather": (
        ["expect", "watch for", "there will be", "forecast shows", "look out for"],
        [
            "light rain",
            "strong winds",
            "clear skies",
            "morning fog",
            "scattered showers",
            "a cold front",
            "high pressure",
            "thunderstorms",
        ],
        ["this afternoon", "overnight", "by the weekend", "in the north", "along the coast"],
    ),
}
_STYLES = ("lower", "upper", "terse", "chatty")
TOPICS = tuple(_TOPICS)


@dataclass(frozen=True)
class Writer:
    """One client's voice: what it talks about and how it writes."""

    topic: str
    style: str
    favourites: tuple[int, ...]

    def sentence(self, rng: np.random.Generator) -> str:
        verbs, objects, tails = _TOPICS[self.topic]
        pick = self.favourites if rng.random() < 0.7 else range(len(objects))
        words = [verbs[int(rng.integers(len(verbs)))], objects[int(rng.choice(list(pick)))]]
        if self.style != "terse":
            words.append(tails[int(rng.integers(len(tails)))])
        text = " ".join(words)
        if self.style == "upper":
            return text.upper() + "!"
        if self.style == "chatty":
            return "so, " + text + ", okay?"
        if self.style == "terse":
            return text + "."
        return text + "."


def writer(client_id: int, seed: int = 0) -> Writer:
    """The writer of ``client_id``: topic and style cycle with the id, favourites are drawn."""
    topic = TOPICS[client_id % len(TOPICS)]
    style = _STYLES[(client_id // len(TOPICS)) % len(_STYLES)]
    rng = np.random.default_rng([seed, client_id, 0x7E47])
    n_obj = len(_TOPICS[topic][1])
    fav = tuple(sorted(int(i) for i in rng.choice(n_obj, size=3, replace=False)))
    return Writer(topic=topic, style=style, favourites=fav)


def client_documents(client_id: int, num_docs: int, *, seed: int = 0, sentences: tuple[int, int] = (2, 5)) -> list[str]:
    """``num_docs`` short documents written by ``client_id``'s writer."""
    if num_docs < 1:
        raise DataError(f"synthetic corpus: num_docs must be >= 1, got {num_docs}")
    w = writer(client_id, seed)
    rng = np.random.default_rng([seed, client_id, 0xC0DE])
    lo, hi = sentences
    return [" ".join(w.sentence(rng) for _ in range(int(rng.integers(lo, hi + 1)))) for _ in range(num_docs)]


def write_corpus(
    folder: str | Path, num_clients: int, docs_per_client: int, *, seed: int = 0, fmt: str = "jsonl"
) -> list[Path]:
    """Write one file per client (``client_000.jsonl`` or ``.txt``) and return their paths.

    JSON-lines files hold one ``{"text": ...}`` object per document; text files one
    document per paragraph (separated by a blank line).
    """
    import json

    if num_clients < 1:
        raise DataError(f"synthetic corpus: num_clients must be >= 1, got {num_clients}")
    if fmt not in ("jsonl", "txt"):
        raise DataError(f"synthetic corpus: format must be 'jsonl' or 'txt', got {fmt!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid in range(num_clients):
        docs = client_documents(cid, docs_per_client, seed=seed)
        path = out / f"client_{cid:03d}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        else:
            path.write_text("\n\n".join(docs) + "\n")
        paths.append(path)
    return paths

"""A synthetic per-client text corpus in which every client writes in its own style.

Each client is one writer: a topic (voice commands to a car, a technician's notes, a
cook's recipe steps, weather reports ...), a fixed set of favourite phrases and a
surface style (lower case, upper case, terse, chatty). The same generator, seed and
client id always give the same text, so runs are reproducible; the styles differ
enough that a model fitted to the pooled text is worse on each writer than one
adapted to them, which is the situation federated personalisation is for.

The writers' fragments suit a tiny model trained from scratch. For a pretrained LM
:func:`domain_documents` writes whole English sentences in three domains — a
driver-assistance owner's manual, a fleet workshop's maintenance log, and dialogue
between a driver and an in-car assistant — each with its own vocabulary, layout and
register, so a real model has something to learn per client that it did not know.
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
    folder: str | Path,
    num_clients: int,
    docs_per_client: int,
    *,
    seed: int = 0,
    fmt: str = "jsonl",
    kind: str = "writers",
) -> list[Path]:
    """Write one file per client (``client_000.jsonl`` or ``.txt``) and return their paths.

    ``kind`` is ``"writers"`` (:func:`client_documents`) or ``"domains"``
    (:func:`domain_documents`). JSON-lines files hold one ``{"text": ...}`` object per
    document; text files one document per paragraph (separated by a blank line).
    """
    import json

    if num_clients < 1:
        raise DataError(f"synthetic corpus: num_clients must be >= 1, got {num_clients}")
    if fmt not in ("jsonl", "txt"):
        raise DataError(f"synthetic corpus: format must be 'jsonl' or 'txt', got {fmt!r}")
    if kind not in CORPORA:
        raise DataError(f"synthetic corpus: kind must be one of {', '.join(CORPORA)}, got {kind!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid in range(num_clients):
        docs = corpus_documents(kind, cid, docs_per_client, seed=seed)
        path = out / f"client_{cid:03d}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        else:
            path.write_text("\n\n".join(docs) + "\n")
        paths.append(path)
    return paths


_FEATURES = (
    ("Adaptive Cruise Control", "keeps a set distance to the vehicle ahead"),
    ("Lane Keeping Assist", "steers gently back when the car drifts out of its lane"),
    ("Blind Spot Monitor", "lights a symbol in the door mirror when a vehicle is beside you"),
    ("Automatic Emergency Braking", "brakes the car if a collision with an obstacle ahead is imminent"),
    ("Traffic Sign Recognition", "shows the current speed limit in the instrument cluster"),
    ("Rear Cross Traffic Alert", "warns of vehicles crossing behind you while reversing"),
    ("Driver Attention Monitor", "suggests a break when it detects signs of fatigue"),
    ("Park Assist", "steers the car into a parking space while you control the pedals"),
)
_LIMITS = (
    "the windscreen camera is covered by snow, ice or dirt",
    "lane markings are faded or missing",
    "the radar sensor behind the front emblem is blocked",
    "you drive through heavy rain or fog",
    "the road has tight bends or steep hills",
    "the vehicle ahead is a motorcycle or a narrow trailer",
    "the system is switched off in the settings menu",
)
_MANUAL = (
    "{f} {does} at speeds above {speed} km/h.",
    "{f} may not work correctly when {limit}.",
    "To switch {f} on or off, press the button on the {place} and check the symbol in the display.",
    "WARNING: {f} is a driving aid. You remain responsible for keeping a safe distance and for steering.",
    "If a message says that {f} is unavailable, {action}.",
    "Note: {f} does not respond to pedestrians or stationary objects in every situation.",
)
_PLACES = ("steering wheel", "centre console", "left stalk", "overhead panel")
_ACTIONS = (
    "stop the vehicle in a safe place and restart the engine",
    "clean the sensor area and drive on for a few minutes",
    "have the system checked by a qualified workshop",
    "check that the camera's field of view is clear",
)
_UNITS = ("truck 12", "van 4", "bus 31", "forklift 7", "tractor 2", "van 9")
_PARTS = (
    ("brake pads, front axle", "thickness {n} mm", "replaced"),
    ("hydraulic pump seal", "pressure {n}0 bar", "replaced"),
    ("drive belt", "tension {n} N", "adjusted"),
    ("air filter", "restriction {n}0 mbar", "cleaned"),
    ("coolant", "frost protection to -{n}0 C", "topped up"),
    ("battery", "resting voltage 12.{n} V", "tested"),
    ("tyres", "tread depth {n} mm", "rotated"),
    ("wheel nuts", "torque {n}20 Nm", "tightened"),
)
_RESULTS = ("within tolerance", "ok", "worn, order a spare", "leak found, monitor", "passed", "refit and tested")
_MECHANICS = ("JK", "AM", "RS", "TB")
_ASKS = (
    ("Find a charging station near {town}.", "The closest one is {n} km away, on {road}. Shall I start navigation?"),
    ("How far is it to {town}?", "About {n}0 kilometres; with current traffic we arrive in {n}5 minutes."),
    ("Set the temperature to {n}0 degrees.", "Done. The cabin will be at {n}0 degrees in a few minutes."),
    (
        "Is there a traffic jam on {road}?",
        "Yes, there is a queue of {n} kilometres after an accident. I can take you around it.",
    ),
    ("Call the workshop.", "Calling the workshop now. Your next service is due in {n}00 kilometres."),
    (
        "Why is the lane assist light yellow?",
        "The camera cannot see the lane markings. It will come back on by itself.",
    ),
    ("Play the news.", "Here is the latest bulletin from the radio station in {town}."),
)
_TOWNS = ("Lyon", "the airport", "Hamburg", "the city centre", "Bristol", "Turin")
_ROADS = ("Harbour Road", "the A7", "Station Street", "the ring road", "the M4")
DOMAINS = ("manual", "maintenance", "dialogue")
"""The domains of :func:`domain_documents`; client ``c`` writes in ``DOMAINS[c % 3]``."""


def _manual_sentence(rng: np.random.Generator) -> str:
    name, does = _FEATURES[int(rng.integers(len(_FEATURES)))]
    template = _MANUAL[int(rng.integers(len(_MANUAL)))]
    return template.format(
        f=name,
        does=does,
        speed=int(rng.choice([10, 30, 60, 65])),
        limit=_LIMITS[int(rng.integers(len(_LIMITS)))],
        place=_PLACES[int(rng.integers(len(_PLACES)))],
        action=_ACTIONS[int(rng.integers(len(_ACTIONS)))],
    )


def _log_entry(rng: np.random.Generator) -> str:
    part, reading, done = _PARTS[int(rng.integers(len(_PARTS)))]
    day = f"2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    unit = _UNITS[int(rng.integers(len(_UNITS)))]
    hours = int(rng.integers(100, 9000))
    result = _RESULTS[int(rng.integers(len(_RESULTS)))]
    who = _MECHANICS[int(rng.integers(len(_MECHANICS)))]
    measured = reading.format(n=int(rng.integers(2, 10)))
    return f"{day} {unit} ({hours} h): {part} {done}; {measured}; {result}. sign: {who}"


def _exchange(rng: np.random.Generator) -> str:
    ask, answer = _ASKS[int(rng.integers(len(_ASKS)))]
    fill = {
        "town": _TOWNS[int(rng.integers(len(_TOWNS)))],
        "road": _ROADS[int(rng.integers(len(_ROADS)))],
        "n": int(rng.integers(2, 10)),
    }
    return f"Driver: {ask.format(**fill)}\nAssistant: {answer.format(**fill)}"


def domain_documents(client_id: int, num_docs: int, *, seed: int = 0, sentences: tuple[int, int] = (2, 4)) -> list[str]:
    """``num_docs`` documents of ``client_id``'s domain (:data:`DOMAINS`, cycling with the id).

    Manual pages are runs of sentences, log documents one entry per line, dialogues one
    driver-assistant exchange per pair of lines. Same arguments, same text.
    """
    if num_docs < 1:
        raise DataError(f"domain corpus: num_docs must be >= 1, got {num_docs}")
    domain = DOMAINS[client_id % len(DOMAINS)]
    rng = np.random.default_rng([seed, client_id, 0xD0C5])
    lo, hi = sentences
    make, sep = {"manual": (_manual_sentence, " "), "maintenance": (_log_entry, "\n"), "dialogue": (_exchange, "\n")}[
        domain
    ]
    return [sep.join(make(rng) for _ in range(int(rng.integers(lo, hi + 1)))) for _ in range(num_docs)]


CORPORA = ("writers", "domains")
"""The synthetic corpora: the styled writers' fragments, or the three domains' prose."""


def corpus_documents(kind: str, client_id: int, num_docs: int, *, seed: int = 0) -> list[str]:
    """``client_id``'s documents of the ``kind`` corpus (one of :data:`CORPORA`)."""
    if kind == "writers":
        return client_documents(client_id, num_docs, seed=seed)
    if kind == "domains":
        return domain_documents(client_id, num_docs, seed=seed)
    raise DataError(f"synthetic corpus: kind must be one of {', '.join(CORPORA)}, got {kind!r}")

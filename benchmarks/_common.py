"""Helpers shared by the benchmark scripts: peak RSS and the one-JSON-line output."""

from __future__ import annotations

import json
import resource
import sys
from typing import Any


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(record: dict[str, Any]) -> None:
    """Print the benchmark's result as one JSON line, last on stdout."""
    record.setdefault("peak_rss_mib", round(peak_rss_mib(), 1))
    sys.stdout.write(json.dumps(record, default=float) + "\n")
    sys.stdout.flush()

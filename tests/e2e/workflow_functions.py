"""Functions the e2e workflow tests run as function tasks.

Agents started by the `workflows` fixture have tests/e2e on their `--pythonpath`, so a task names
these as `workflow_functions:square`; the test process imports the same file under the same name
(the `workflow_functions` fixture), so the SDK can refer to the functions themselves.
Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import os
import time
from typing import Any


def square(n: int) -> dict[str, Any]:
    """One fan-out item: its own number, its square, and the attempt that computed it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {n!r}")
    return {"item": n, "square": n * n, "attempt": int(os.environ["POLYFABRIC_ATTEMPT"])}


def gather(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fan-in: the items in the order they arrived, and the sum of their squares."""
    return {"count": len(results), "items": [r["item"] for r in results], "total": sum(r["square"] for r in results)}


def timed(tag: str, seconds: float) -> dict[str, Any]:
    """Hold a slot for `seconds`; the wall-clock interval (time.time()) the call ran in."""
    start = time.time()
    time.sleep(seconds)
    return {"tag": tag, "start": start, "end": time.time()}


def gather_tags(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fan-in of `timed` items: how many there were, and their tags (as numbers) in order."""
    return {"count": len(results), "tags": sorted(int(r["tag"]) for r in results)}

"""Function tasks for tests/e2e/test_metrics_ledger.py (imported by agents through --pythonpath)."""

from __future__ import annotations

import time
from typing import Any


def burn(seconds: float) -> dict[str, Any]:
    """Spend `seconds` of CPU time in this process, then say how much it measured itself."""
    start = time.process_time()
    spins = 0
    while time.process_time() - start < seconds:
        spins += 1
    return {"cpu_s": time.process_time() - start, "spins": spins}

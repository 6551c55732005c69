"""Make `polyfabric` importable from the src layout when it is not installed in the venv."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import polyfabric  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the venv was set up
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

"""Functions the artifact e2e tests run as function tasks (tests/e2e is on the agents' --pythonpath).
Not a test module: pytest does not collect it."""

from __future__ import annotations

import os
from typing import Any


def pattern(size: int, seed: int = 7) -> bytes:
    """Deterministic bytes the test can rebuild to compare with what it downloads."""
    block = bytes((i * seed + 3) % 251 for i in range(65521))
    return (block * (size // len(block) + 1))[:size]


def leave_model(size: int) -> dict[str, Any]:
    """A function task leaving a file through `polyfabric.task_context().artifacts_dir`."""
    import polyfabric

    ctx = polyfabric.task_context()
    assert ctx.artifacts_dir is not None and str(ctx.artifacts_dir) == os.environ["POLYFABRIC_ARTIFACTS"]
    (ctx.artifacts_dir / "model.bin").write_bytes(pattern(size, seed=11))
    return {"wrote": size}

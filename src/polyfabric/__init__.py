"""polyfabric: a polycentric compute fabric.

Machines owned by different organizations join one network as nodes and run DAG workflows
together. See docs/architecture.md for the map of the packages.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "task_context"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """`polyfabric.task_context()` (sdk/context.py), imported on first use: `import polyfabric` stays light."""
    if name == "task_context":
        from polyfabric.sdk.context import task_context

        return task_context
    raise AttributeError(f"module 'polyfabric' has no attribute {name!r}")

"""polyfabric: a polycentric compute fabric.

Machines owned by different organizations join one network as nodes and run DAG workflows
together. See docs/architecture.md for the map of the packages.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

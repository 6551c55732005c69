"""Resources: what a node offers and what a task asks for.

CPU in millicores, memory and disk in bytes, GPUs as a count plus their descriptions. Quantities
parse from the forms users write ("2", "500m", "256Mi", "4G").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from polyfabric.domain.errors import ValidationError

__all__ = ["Gpu", "Resources", "parse_cpu", "parse_bytes", "format_bytes"]

_UNITS = {
    "": 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_QUANTITY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")


def _finite(value: float, what: str) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValidationError(f"{value!r} is not a {what}")
    if value < 0:
        raise ValidationError(f"a {what} cannot be negative: {value}")
    return value


def parse_bytes(value: str | int | float) -> int:
    """'256Mi' -> 268435456; a bare number is bytes."""
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a size")
    if isinstance(value, int):
        return int(_finite(value, "size"))
    if isinstance(value, float):
        return int(_finite(value, "size"))
    match = _QUANTITY_RE.match(value)
    if not match or match.group(2) not in _UNITS:
        raise ValidationError(f"{value!r} is not a size (examples: 512Mi, 4Gi, 10G, 1048576)")
    number, unit = match.group(1), _UNITS[match.group(2)]
    if "." not in number:
        return int(number) * unit
    return int(float(number) * unit)


def parse_cpu(value: str | int | float) -> int:
    """CPU in millicores: '2' -> 2000, '500m' -> 500, 1.5 -> 1500."""
    if isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a CPU quantity")
    if isinstance(value, int | float):
        return round(_finite(float(value), "CPU quantity") * 1000)
    text = value.strip()
    millis = text.endswith("m")
    number = text[:-1] if millis else text
    if not _NUMBER_RE.match(number) or (millis and "." in number):
        raise ValidationError(f"{value!r} is not a CPU quantity (examples: 2, 0.5, 500m)")
    return int(number) if millis else round(float(number) * 1000)


def format_bytes(value: int) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU as the node detected it."""

    model: str
    memory_bytes: int
    uuid: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class Resources:
    """A bundle of countable resources. Arithmetic is element-wise; `fits` is the one comparison."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpus: int = 0
    slots: int = 0
    gpu_models: tuple[Gpu, ...] = field(default=(), compare=False)

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.disk_bytes + other.disk_bytes,
            self.gpus + other.gpus,
            self.slots + other.slots,
            self.gpu_models,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.disk_bytes - other.disk_bytes,
            self.gpus - other.gpus,
            self.slots - other.slots,
            self.gpu_models,
        )

    def fits(self, request: Resources) -> bool:
        """True when `request` fits inside these (free) resources."""
        return not self.shortfall(request)

    def shortfall(self, request: Resources) -> list[str]:
        """The names of the dimensions where `request` exceeds these resources (empty: it fits)."""
        short = []
        if request.cpu_millis > self.cpu_millis:
            short.append("cpu")
        if request.memory_bytes > self.memory_bytes:
            short.append("memory")
        if request.disk_bytes > self.disk_bytes:
            short.append("disk")
        if request.gpus > self.gpus:
            short.append("gpu")
        if request.slots > self.slots:
            short.append("slots")
        return short

    def to_dict(self) -> dict[str, object]:
        return {
            "cpu_millis": self.cpu_millis,
            "memory_bytes": self.memory_bytes,
            "disk_bytes": self.disk_bytes,
            "gpus": self.gpus,
            "slots": self.slots,
            "gpu_models": [
                {"model": g.model, "memory_bytes": g.memory_bytes, "uuid": g.uuid, "index": g.index}
                for g in self.gpu_models
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Resources:
        gpus = tuple(Gpu(**g) for g in data.get("gpu_models", []) or [])  # type: ignore[arg-type, union-attr]
        return cls(
            cpu_millis=int(data.get("cpu_millis", 0) or 0),  # type: ignore[call-overload]
            memory_bytes=int(data.get("memory_bytes", 0) or 0),  # type: ignore[call-overload]
            disk_bytes=int(data.get("disk_bytes", 0) or 0),  # type: ignore[call-overload]
            gpus=int(data.get("gpus", 0) or 0),  # type: ignore[call-overload]
            slots=int(data.get("slots", 0) or 0),  # type: ignore[call-overload]
            gpu_models=gpus,
        )

"""Configuration documents for nodes: the schema, scopes, and the merge by scope (PURE).

A document is what an operator publishes with `polyfabric config publish FILE --scope S`: every
field is optional, and a field left out says nothing (a broader scope's value stays). Documents
apply at four scopes, broad to narrow: `network` < `domain:NAME` < `selector:k=v,...` < `node:ID`.
A node's configuration is the merge of every document that applies to it, in that order (and,
within one scope rank, by version: a later document wins), where **the narrower value wins**:

- scalar fields (`max_concurrent_tasks`, `allowed_env`) and each field of a section (`health`,
  `execution`, `network`, `reservations`): the last document that sets it;
- `labels`: merged key by key, the last document that sets a key wins.

`merge` is a pure function (tested with Hypothesis in tests/unit/domain/test_configdoc.py); the
coordinator (services/config.py) decides which documents apply, the agent (agent/config.py) applies
the result.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from polyfabric.domain.errors import ValidationError as DomainValidationError
from polyfabric.domain.jobs import parse_duration
from polyfabric.domain.resources import parse_bytes, parse_cpu

__all__ = [
    "SCOPE_RANKS",
    "ConfigDocument",
    "Scope",
    "describe_validation",
    "merge",
    "parse_document",
    "parse_scope",
    "env_allowed",
]

SCOPE_RANKS = {"network": 0, "domain": 1, "selector": 2, "node": 3}

_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$")
_ENV_PATTERN = re.compile(r"^[A-Za-z_*?][A-Za-z0-9_*?]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Health(_Strict):
    """How the agent checks itself (docs/config.md)."""

    interval_s: float | None = Field(default=None, gt=0, le=3600)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("interval_s", "timeout_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _seconds(value)


class Execution(_Strict):
    """What tasks may do on the node: the agent refuses (rejects) a lease that breaks these."""

    max_timeout_s: float | None = Field(default=None, gt=0)
    allowed_commands: tuple[str, ...] | None = None  # globs over the command's program name
    functions: bool | None = None  # may function tasks run here

    @field_validator("max_timeout_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _seconds(value)


class Network(_Strict):
    """Network rules (recorded and handed to tasks; enforcing them is the owner's firewall's job)."""

    outbound: Literal["allow", "deny"] | None = None
    allowed_hosts: tuple[str, ...] | None = None


class Reservations(_Strict):
    """Resources kept back for the owner: taken off what the node offers to tasks."""

    cpu_millis: int | None = Field(default=None, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)

    @field_validator("cpu_millis", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        return parse_cpu(value) if isinstance(value, str) else value

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return parse_bytes(value) if isinstance(value, str) else value


class ConfigDocument(_Strict):
    labels: dict[str, str] | None = None
    max_concurrent_tasks: int | None = Field(default=None, ge=0, le=100_000)
    reservations: Reservations | None = None
    allowed_env: tuple[str, ...] | None = None  # names (globs) a task's env may set; None = any
    health: Health | None = None
    network: Network | None = None
    execution: Execution | None = None
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a label name (letters, digits, '.', '_', '/', '-')")
            if len(item) > 200:
                raise ValueError(f"the value of label {key!r} is longer than 200 characters")
        return value

    @field_validator("allowed_env")
    @classmethod
    def _env(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            if not _ENV_PATTERN.match(name):
                raise ValueError(f"{name!r} is not a variable name or glob (letters, digits, '_', '*', '?')")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (None means "not said here"), as plain JSON."""
        return self.model_dump(mode="json", exclude_none=True)


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DomainValidationError as exc:
            raise ValueError(exc.message) from None
    return value


def describe_validation(exc: ValidationError) -> str:
    """'max_concurrent_tasks: Input should be ...; health.interva: Extra inputs ...' (field paths first)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "(document)"
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field (not part of a configuration document)"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_document(data: Any) -> ConfigDocument:
    """Validate a document; DomainValidationError naming every bad field."""
    if not isinstance(data, Mapping):
        raise DomainValidationError("a configuration document must be a mapping of fields "
                                    "(labels, max_concurrent_tasks, health, ...)")
    try:
        return ConfigDocument.model_validate(dict(data))
    except ValidationError as exc:
        raise DomainValidationError(f"invalid configuration document: {describe_validation(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise DomainValidationError(f"invalid configuration document: {exc}") from None


# -- scopes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # network | domain | selector | node
    target: str = ""  # domain name, "k=v,k=v" (sorted), or node id

    @property
    def rank(self) -> int:
        return SCOPE_RANKS[self.kind]

    @property
    def text(self) -> str:
        return self.kind if self.kind == "network" else f"{self.kind}:{self.target}"

    def selector(self) -> dict[str, str]:
        out = {}
        for item in self.target.split(","):
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def applies(self, node_id: str, domain: str, labels: Mapping[str, str]) -> bool:
        if self.kind == "network":
            return True
        if self.kind == "domain":
            return domain == self.target
        if self.kind == "node":
            return node_id == self.target
        return all(labels.get(k) == v for k, v in self.selector().items())


@functools.lru_cache(maxsize=4096)
def parse_scope(text: str) -> Scope:
    """'network', 'domain:lab-a', 'selector:region=eu,gpu=a100', 'node:n-...' -> Scope."""
    text = (text or "").strip()
    kind, sep, target = text.partition(":")
    if kind == "network" and not sep:
        return Scope("network")
    if kind not in SCOPE_RANKS or not sep or not target.strip():
        raise DomainValidationError(
            f"scope {text!r} is not one of network, domain:NAME, selector:KEY=VALUE[,KEY=VALUE], node:ID")
    target = target.strip()
    if kind == "selector":
        pairs = {}
        for item in target.split(","):
            key, eq, value = item.strip().partition("=")
            if not eq or not _LABEL_KEY.match(key.strip()):
                raise DomainValidationError(f"selector {target!r}: {item!r} is not KEY=VALUE")
            pairs[key.strip()] = value.strip()
        target = ",".join(f"{k}={v}" for k, v in sorted(pairs.items()))
    elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", target):
        raise DomainValidationError(f"scope {text!r}: {target!r} is not a {kind} name")
    return Scope(kind, target)


# -- the merge ----------------------------------------------------------------------------------

_SECTIONS = ("reservations", "health", "network", "execution")


def merge(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge documents given broad to narrow (as `to_dict()` dicts): the later one wins per field,
    per section field, and per label. Pure; the result is again a valid document's dict."""
    out: dict[str, Any] = {}
    for doc in documents:
        for key, value in doc.items():
            if value is None:
                continue
            if key == "labels" or key in _SECTIONS:
                merged = dict(out.get(key) or {})
                merged.update({k: v for k, v in value.items() if v is not None})
                out[key] = merged
            else:
                out[key] = value
    return out


def env_allowed(name: str, patterns: Iterable[str] | None) -> bool:
    """May a task set variable `name`, given `allowed_env` (None: anything)?"""
    if patterns is None:
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

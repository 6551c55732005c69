"""The one error hierarchy of polyfabric's core.

    DomainError                      something the caller asked for cannot be done
    ├── ValidationError              the input is malformed or inconsistent       (never: fix the input)
    ├── NotFound                     the named object does not exist               (never)
    ├── Conflict                     the object exists or is in the way            (never, as asked)
    │   └── InvalidTransition        a state machine refuses the move              (never, from this state)
    ├── NotAuthenticated             no or bad credentials                         (never, with these)
    ├── NotPermitted                 authenticated, but the role or domain forbids (never, with this token)
    ├── Unavailable                  try again later (overload, not the leader)    (retry later)
    │   └── NotLeader                this coordinator does not lead: ask the leader (retry there)
    └── InternalFault                a bug or broken invariant on our side         (report it)

`api/errors.py` is the only place that maps these to HTTP; the CLI maps HTTP problems back to
messages. Messages name the object and the problem, so a user can act on them.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DomainError",
    "InternalFault",
    "InvalidTransition",
    "NotAuthenticated",
    "NotFound",
    "NotLeader",
    "NotPermitted",
    "Unavailable",
    "ValidationError",
]


class DomainError(Exception):
    """Base of every error the core raises on purpose. `code` is a stable machine-readable name."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(DomainError):
    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class NotAuthenticated(DomainError):
    code = "unauthenticated"


class NotPermitted(DomainError):
    code = "forbidden"


class Unavailable(DomainError):
    code = "unavailable"


class InternalFault(DomainError):
    code = "internal"


class NotLeader(Unavailable):
    """A write that only the leading coordinator may make reached another one (or a leader that
    lost its lease). `leader_url` is the leader's advertised URL when known."""

    code = "not_leader"

    def __init__(self, message: str, leader_url: str | None = None) -> None:
        super().__init__(message)
        self.leader_url = leader_url

"""What a client call can fail with, as messages a person can act on.

    ClientError
    ├── CoordinatorUnreachable   the coordinator did not answer (down, wrong address)  retry later
    └── ApiError                 it answered with a problem: status, code, message      as the code says
"""

from __future__ import annotations

__all__ = ["ApiError", "ClientError", "CoordinatorUnreachable"]


class ClientError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CoordinatorUnreachable(ClientError):
    pass


class ApiError(ClientError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def is_retryable(self) -> bool:
        return self.status in (408, 429, 502, 503, 504)

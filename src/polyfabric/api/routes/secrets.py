"""Secrets (names and metadata only: no call returns a value) and signed result manifests."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends, Request

from polyfabric.api.auth import principal
from polyfabric.domain.access import Principal
from polyfabric.domain.errors import ValidationError
from polyfabric.schemas.config import SecretSetIn

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["secrets"])


@router.put("/secrets/{name}")
def set_secret(name: str, body: SecretSetIn, request: Request,
               caller: Principal = Depends(principal)) -> dict[str, Any]:
    try:
        value = base64.b64decode(body.value_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("value_b64 is not valid base64") from None
    return request.app.state.services.secrets.set(caller, body.domain, name, value)


@router.get("/secrets")
def list_secrets(request: Request, domain: str | None = None,
                 caller: Principal = Depends(principal)) -> list[dict[str, Any]]:
    return request.app.state.services.secrets.list(caller, domain)


@router.delete("/secrets/{name}")
def remove_secret(name: str, request: Request, domain: str,
                  caller: Principal = Depends(principal)) -> dict[str, str]:
    request.app.state.services.secrets.remove(caller, domain, name)
    return {"domain": domain, "name": name, "status": "removed"}


@router.post("/secrets/rotate-key")
def rotate_key(request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    return request.app.state.services.secrets.rotate_key(caller)


@router.get("/jobs/{job_id}/manifests", tags=["jobs"])
def job_manifests(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    """Everything needed to check a job's results offline: results, signed manifests, node keys."""
    return request.app.state.services.manifests.bundle(caller, job_id)


@router.get("/jobs/{job_id}/verify", tags=["jobs"])
def job_verify(job_id: str, request: Request, caller: Principal = Depends(principal)) -> dict[str, Any]:
    """The coordinator's own check (`polyfabric job verify` checks the bundle on the client instead)."""
    return request.app.state.services.manifests.verify(caller, job_id)

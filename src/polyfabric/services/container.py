"""All services of one coordinator, built once from a ServiceContext (the composition root
passes this single object to the API and the controllers)."""

from __future__ import annotations

from dataclasses import dataclass

from polyfabric.services.audit import AuditService
from polyfabric.services.context import ServiceContext
from polyfabric.services.domains import DomainService
from polyfabric.services.jobs import JobService
from polyfabric.services.nodes import NodeService
from polyfabric.services.runtime import JobRuntime
from polyfabric.services.tokens import TokenService

__all__ = ["Services"]


@dataclass
class Services:
    ctx: ServiceContext
    tokens: TokenService
    domains: DomainService
    nodes: NodeService
    audit: AuditService
    runtime: JobRuntime
    jobs: JobService

    @classmethod
    def build(cls, ctx: ServiceContext) -> Services:
        tokens = TokenService(ctx)
        runtime = JobRuntime(ctx)
        return cls(ctx=ctx, tokens=tokens, domains=DomainService(ctx), nodes=NodeService(ctx, tokens),
                   audit=AuditService(ctx), runtime=runtime, jobs=JobService(ctx, runtime))

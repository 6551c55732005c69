"""All services of one coordinator, built once from a ServiceContext (the composition root
passes this single object to the API and the controllers)."""

from __future__ import annotations

from dataclasses import dataclass

from polyfabric.services.artifacts import ArtifactService
from polyfabric.services.audit import AuditService
from polyfabric.services.checkpoints import CheckpointService
from polyfabric.services.config import ConfigService
from polyfabric.services.context import ServiceContext
from polyfabric.services.domains import DomainService
from polyfabric.services.gc import GcService
from polyfabric.services.jobs import JobService
from polyfabric.services.ledger import LedgerService
from polyfabric.services.manifests import ManifestService
from polyfabric.services.nodes import NodeService
from polyfabric.services.policies import PolicyService
from polyfabric.services.pools import PoolService
from polyfabric.services.runtime import JobRuntime
from polyfabric.services.schedules import ScheduleService
from polyfabric.services.secrets import SecretService
from polyfabric.services.telemetry_history import TelemetryHistory
from polyfabric.services.tokens import TokenService
from polyfabric.services.topology import TopologyService
from polyfabric.services.triggers import TriggerService

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
    checkpoints: CheckpointService | None = None  # its directory is set by the coordinator (bootstrap)
    policies: PolicyService | None = None  # issue 6
    topology: TopologyService = None  # type: ignore[assignment]  # issue 7: set in build()
    config: ConfigService | None = None  # issue 6: configuration documents
    secrets: SecretService | None = None  # issue 6: its key file is set by the coordinator (bootstrap)
    manifests: ManifestService | None = None  # issue 6: signed results
    schedules: ScheduleService | None = None  # issue 7: cron schedules, webhook triggers, GC
    triggers: TriggerService | None = None
    gc: GcService | None = None
    telemetry_history: TelemetryHistory | None = None  # issue 7: per-node telemetry history
    ledger: LedgerService | None = None  # issue 7: the contribution ledger
    pools: PoolService | None = None  # issue 7: elastic node pools (providers set in bootstrap)
    artifacts: ArtifactService | None = None  # files tasks leave; its directory is set in bootstrap

    @classmethod
    def build(cls, ctx: ServiceContext) -> Services:
        tokens = TokenService(ctx)
        runtime = JobRuntime(ctx)
        services = cls(ctx=ctx, tokens=tokens, domains=DomainService(ctx), nodes=NodeService(ctx, tokens),
                   audit=AuditService(ctx), runtime=runtime, jobs=JobService(ctx, runtime),
                   checkpoints=CheckpointService(ctx, runtime, None))
        services.nodes.on_declared = runtime.node_declared
        services.policies = PolicyService(ctx, runtime)
        services.topology = TopologyService(ctx, runtime.allocated_by_node)
        services.config = ConfigService(ctx)
        services.secrets = SecretService(ctx)
        services.manifests = ManifestService(ctx)
        services.schedules = ScheduleService(ctx, runtime)
        services.triggers = TriggerService(ctx, runtime)
        services.gc = GcService(ctx, runtime, forget=services.triggers.forget_deliveries)
        services.telemetry_history = TelemetryHistory(ctx)
        services.ledger = LedgerService(ctx)
        runtime.share_balances = services.ledger.balances
        services.pools = PoolService(ctx, waiting=runtime.waiting_tasks, attempts_on=runtime.attempts_on,
                                     nodes=services.nodes, tokens=tokens, released_at=runtime.released_at)
        services.artifacts = ArtifactService(ctx, runtime, None)
        return services

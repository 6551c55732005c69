"""create_app: the one place where routes, middleware and error handling are put together.

Middleware order (outermost first): request id, body limit (1 MiB), the leader gate (with
several coordinators, leader-only requests reaching another one get 503 and the leader's URL),
then FastAPI's own stack with our error handlers. Every /v1 route authenticates: bearer tokens
for people and tools, RFC 9421 signatures for agents. /healthz and the OpenAPI document are public.
"""

from __future__ import annotations

from fastapi import FastAPI

from polyfabric import __version__
from polyfabric.api.errors import install_error_handlers
from polyfabric.api.leader import LeaderGateMiddleware
from polyfabric.api.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestIdMiddleware
from polyfabric.api.notify import Notifier
from polyfabric.api.routes import agent, audit, jobs, meta, nodes, tokens
from polyfabric.api.routes import artifacts as artifact_routes
from polyfabric.api.routes import config as config_routes
from polyfabric.api.routes import gc as gc_routes
from polyfabric.api.routes import metrics as metrics_routes
from polyfabric.api.routes import policies as policy_routes
from polyfabric.api.routes import pools as pool_routes
from polyfabric.api.routes import schedules as schedule_routes
from polyfabric.api.routes import secrets as secrets_routes
from polyfabric.api.routes import topology as topology_routes
from polyfabric.api.routes import triggers as trigger_routes
from polyfabric.api.routes import ui as ui_routes
from polyfabric.api.routes import usage as usage_routes
from polyfabric.services.container import Services

__all__ = ["create_app"]


def create_app(services: Services, *, body_limit: int = 1 << 20) -> FastAPI:
    app = FastAPI(
        title="polyfabric coordinator",
        version=__version__,
        description="The coordinator's API: nodes, tokens, domains, audit, and the agent protocol.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.notifier = Notifier()
    services.runtime.set_notifier(app.state.notifier.notify)
    install_error_handlers(app)
    # The agent protocol first: routes are matched in order, and heartbeats, leases and reports are
    # most of the traffic (no other router's paths overlap /v1/agent/).
    for module in (agent, meta, tokens, nodes, audit, jobs, ui_routes, schedule_routes, trigger_routes, gc_routes,
                   pool_routes):
        app.include_router(module.router)
    app.include_router(config_routes.agent_router)  # issue 6: POST /v1/agent/config
    app.include_router(config_routes.router)
    app.include_router(secrets_routes.router)
    app.include_router(policy_routes.router)  # issue 6: /v1/policies
    app.include_router(topology_routes.router)  # issue 7: GET /v1/topology
    app.include_router(metrics_routes.router)  # issue 7: GET /metrics, GET /v1/nodes/{ref}/metrics
    app.include_router(usage_routes.router)  # issue 7: GET /v1/usage
    app.include_router(artifact_routes.router)  # GET /v1/jobs/{id}/artifacts, GET /v1/tasks/{id}/artifacts/{path}
    app.add_middleware(LeaderGateMiddleware, leadership=lambda: services.ctx.leadership)
    app.add_middleware(BodyLimitMiddleware, limit=body_limit)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(MetricsMiddleware)  # outermost: API latency of every answer, refusals included
    return app

"""The web edge's application factory."""

from __future__ import annotations

import logging

from aiohttp import web

from services.web.config import WebConfig
from services.web.inbound_sms import SNS_FETCHER, sns_verifier
from services.web.middlewares import (
    access_log_middleware,
    csrf_middleware,
    error_middleware,
    request_context_middleware,
    security_headers,
)
from services.web.rendering import setup_templates
from services.web.resources import (
    CONFIG,
    LIVE,
    METRICS,
    PRACTICES,
    LiveStreams,
    PracticeProfiles,
    WebMetrics,
    grpc_backends,
    metrics_endpoint,
)
from services.web.routes import setup_routes
from services.web.ses_feedback import ses_verifier
from services.web.session import session_middleware, stale_cookie_middleware
from services.web.sns_signature import Fetcher

log = logging.getLogger("confidant.web")

# Forms and JSON bodies are small: a 5,000-character message is well under this.
MAX_REQUEST_BYTES = 256 * 1024


async def _end_live_streams(app: web.Application) -> None:
    """on_shutdown: event streams would otherwise hold the graceful shutdown open."""
    log.info("ending live-update streams", extra={"fields": {"open_streams": app[LIVE].count}})
    app[LIVE].stopping.set()


def create_app(config: WebConfig, *, sns_fetcher: Fetcher | None = None) -> web.Application:
    """``sns_fetcher``: how SNS signing certificates are fetched (tests serve a test CA's);
    by default over verified HTTPS from the SNS host."""
    app = web.Application(
        middlewares=[
            request_context_middleware,
            access_log_middleware,
            stale_cookie_middleware,
            error_middleware,
            csrf_middleware,
            session_middleware,
        ],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[CONFIG] = config
    app[LIVE] = LiveStreams()
    app[PRACTICES] = PracticeProfiles()
    app[METRICS] = WebMetrics()
    app.cleanup_ctx.append(grpc_backends)
    app.cleanup_ctx.append(metrics_endpoint)
    if sns_fetcher is not None:
        app[SNS_FETCHER] = sns_fetcher
    if config.sns_topic_arns:
        app.cleanup_ctx.append(sns_verifier)
    if config.ses_topic_arns:
        app.cleanup_ctx.append(ses_verifier)
    setup_templates(app)
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_end_live_streams)
    setup_routes(app, config)
    return app

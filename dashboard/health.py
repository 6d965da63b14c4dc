"""Probes and metrics: /healthz (the process serves), /readyz (its dependencies answer), /metrics.

/healthz and /readyz are public and show no data; /metrics needs DEBUG, a session holding the "use
the operator view" permission, or the RUNBOARD_METRICS_TOKEN bearer token. It answers the counters
and histograms of dashboard.metrics (every process's, in multiprocess mode) and gauges read from
dashboard.ops at scrape time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dashboard import metrics as metrics_counted
from dashboard.conf import app_settings
from jobs.permissions import Power, has_power

from . import ops


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving; touches nothing else (a liveness probe must not flap on Redis)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    result = ops.readiness()
    body = {"status": "ready" if result["ready"] else "not ready", "checks": result["checks"]}
    if not result["ready"]:
        body["failing"] = [name for name, check in result["checks"].items() if not check["ok"]]
    return JsonResponse(body, status=200 if result["ready"] else 503)


class RunboardCollector(Collector):
    """The gauges, read when scraped from Redis and from the rows of live work only (queued and
    running jobs, open sockets, the per-user unread counters): the same whichever web process
    answers, and a scrape's cost does not grow with the jobs or notifications of the past (issue
    15 §5). What happened (jobs finished, their durations, pushes, connects) is counted where it
    happens, in dashboard.metrics."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_kind = GaugeMetricFamily(
            "runboard_jobs_active_by_kind", "Queued and running jobs per kind.", labels=["kind", "state"]
        )
        for row in ops.active_job_counts_by_kind():
            by_kind.add_metric([row["kind"], row["state"]], row["count"])
        yield by_kind

        yield GaugeMetricFamily(
            "runboard_jobs_stalled",
            "Running jobs whose heartbeat is older than RUNBOARD_STALE_AFTER.",
            value=ops.stalled_job_count(),
        )

        try:
            queues: dict[str, int] | None = ops.queue_depths()
        except (redis.RedisError, OSError):
            queues = None
        yield GaugeMetricFamily(
            "runboard_broker_up",
            "1 if the Celery broker (Redis) answered this scrape.",
            value=int(queues is not None),
        )
        depth = GaugeMetricFamily(
            "runboard_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, count in (queues or {}).items():
            depth.add_metric([queue], count)
        yield depth

        yield GaugeMetricFamily(
            "runboard_open_sockets", "WebSockets seen by a web process lately.", value=ops.open_socket_count()
        )
        yield GaugeMetricFamily(
            "runboard_notifications_unread",
            "Unread notifications over all users (the sum of the per-user unread counters).",
            value=ops.unread_notifications_total(),
        )


def _metrics_token() -> str:
    return app_settings.METRICS_TOKEN or os.environ.get("RUNBOARD_METRICS_TOKEN", "")


def _may_read_metrics(request: HttpRequest) -> bool:
    if settings.DEBUG:
        return True
    token = _metrics_token()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    return has_power(request.user, Power.USE_OPERATOR_VIEW)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not _may_read_metrics(request):
        return HttpResponse(
            "Forbidden: /metrics needs a session holding the 'use the operator view' permission or "
            "Authorization: Bearer <RUNBOARD_METRICS_TOKEN>.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    registry = metrics_counted.scrape_registry(RunboardCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

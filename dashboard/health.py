"""Probes and metrics: /healthz (the process serves), /readyz (its dependencies answer), /metrics.

/healthz and /readyz are public and show no data; /metrics needs DEBUG, a staff session or the
RUNBOARD_METRICS_TOKEN bearer token. The figures come from dashboard.ops at scrape time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
    """Computes every figure from the database and Redis when scraped, so it is the same whichever
    web process answers (no per-process counters)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        data = ops.overview()

        jobs = GaugeMetricFamily("runboard_jobs", "Jobs in each state.", labels=["state"])
        for state, count in data["jobs_by_state"].items():
            jobs.add_metric([state], count)
        yield jobs

        by_kind = GaugeMetricFamily(
            "runboard_jobs_active_by_kind", "Queued and running jobs per kind.", labels=["kind", "state"]
        )
        for row in data["active_jobs_by_kind"]:
            by_kind.add_metric([row["kind"], row["state"]], row["count"])
        yield by_kind

        finished = GaugeMetricFamily(
            "runboard_jobs_finished_last_hour",
            "Jobs that reached each final state in the last hour.",
            labels=["state"],
        )
        for state, count in data["finished_last_hour"].items():
            finished.add_metric([state], count)
        yield finished

        yield GaugeMetricFamily(
            "runboard_job_failure_ratio_last_hour",
            "failed / (succeeded + failed) over the last hour; 0 when none finished.",
            value=data["failure_ratio_last_hour"],
        )
        yield GaugeMetricFamily(
            "runboard_jobs_stalled",
            "Running jobs whose heartbeat is older than RUNBOARD_STALE_AFTER.",
            value=data["stalled_jobs"],
        )

        queues = data["queue_depths"]
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
            "runboard_open_sockets", "WebSockets seen by a web process lately.", value=data["open_sockets"]
        )
        yield GaugeMetricFamily(
            "runboard_notifications_unread_total",
            "Unread notifications over all users.",
            value=data["unread_notifications"],
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
            "Forbidden: /metrics needs a staff session or Authorization: Bearer <RUNBOARD_METRICS_TOKEN>.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunboardCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

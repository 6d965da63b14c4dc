"""The Celery app. Configuration lives in Django settings under the CELERY_ namespace."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown

from notifications import push

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _survive_broker_restarts(**kwargs: Any) -> None:
    """Celery 5.7 with kombu 5.7's Redis transport: when the broker connection drops, the worker
    first detaches the transport from the dead connection, then closes it; closing tries to hand
    unacknowledged messages back through the detached transport and raises AttributeError, which
    Celery does not expect, and the worker dies ("Unrecoverable error") instead of reconnecting
    (tests/system/test_faults.py proves the Redis restart). Report it as the connection error it
    is: Celery ignores those there and reconnects; the messages come back after the visibility
    timeout."""
    from kombu.transport import redis as kombu_redis

    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "runboard_patched", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise kombu_redis.get_redis_ConnectionError()("The broker connection is already closed.")
        return connparams(self, asynchronous=asynchronous)

    _connparams.runboard_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]  # the patch, on purpose


@worker_process_shutdown.connect
def _flush_pushes(**kwargs: Any) -> None:
    # Let the last events of this pool process reach Redis before it exits.
    push.flush(timeout=2.0)

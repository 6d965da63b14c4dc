"""Runboard scaled out, for the scale-out system test (issue 17 §1): a ``Stack`` with two web
processes (no sticky routing: a client picks either), two Celery workers each consuming its own
queue, beat and housekeeping, the channel layer sharded over two redis-servers
(CHANNEL_LAYER_REDIS_URLS) and the broker on a third; the session's test database is shared.

Also the clients the test watches it with, each reading in a thread of its own: ``Follower`` (the
documented WebSocket client: resumes with the last notification id it saw, reconnects with backoff,
can be moved from one web process to another) and ``Stream`` (the SSE stream, over plain HTTP)."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from channels_redis.pubsub import RedisPubSubLoopLayer
from django.conf import settings
from websockets.sync.client import ClientConnection, connect

from notifications.models import SocketConnection
from scripts.harness import RedisServer, WebServer
from tests.system.stack import Stack, private_env
from tests.system.test_faults import Client

# The queue of the kind tests/system/scale_out_kinds.py registers in the cluster's processes only.
SCALE_QUEUE, SCALE_KIND = "scale", "scale_block"
KIND_MODULES = "tests.jobs.kinds_for_tests,tests.system.scale_out_kinds"
_clusters = itertools.count(1)


class Cluster(Stack):
    """Web A and B, a worker on ``default`` and one on ``scale``, beat + housekeeping, two layer
    shards and a broker, all started at once; ``close()`` stops all of it."""

    def __init__(
        self, server_env: dict[str, str], *, env: dict[str, str] | None = None, concurrency: int = 2
    ):
        self.name = f"cluster{next(_clusters)}"
        self.directory = Path(server_env["RUNBOARD_VAR_DIR"]) / self.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.concurrency = concurrency
        self.workers = []
        self.beat = self.housekeeping = None
        self.web: WebServer | None = None
        self.webs: list[WebServer] = []
        self.shards: list[RedisServer] = []
        self._tokens: dict[int, str] = {}
        try:
            # The layer keeps nothing (no persistence); the broker holds queued jobs, so it gets
            # an fsync'ed append-only file, as docs/operations.md#redis asks.
            self.shards = [RedisServer(self.directory, name=f"layer-{n}") for n in (1, 2)]
            self.redis = RedisServer(self.directory, aof=True, name="broker")
            self.env = private_env(
                server_env,
                **{
                    "REDIS_URL": self.redis.url,
                    "CELERY_BROKER_URL": self.redis.url,
                    "CHANNEL_LAYER_REDIS_URLS": ",".join(shard.url for shard in self.shards),
                    "RUNBOARD_KIND_MODULES": KIND_MODULES,
                    **(env or {}),
                },
            )
            self.start_worker(wait=False, queues="default")
            self.start_worker(wait=False, queues=SCALE_QUEUE)
            self.start_beat(wait=False)
            self.webs = [
                WebServer(self.env, log_dir=self.directory, name=f"{self.name}-web-{x}", start=False)
                for x in "ab"
            ]
            for web in self.webs:
                web.launch()
            for web in self.webs:
                web.web.wait_for_http(f"{web.url}{web.ready_path}", timeout=web.timeout)
            self.web = self.webs[0]
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Every process at once (each stop waits for its exit), then the Redis servers.
        stops: list[Callable[[], None]] = [web.stop for web in self.webs]
        stops += [process.stop for process in (self.beat, self.housekeeping) if process is not None]
        # Warm shutdown waits for running jobs; a test that leaves one running does not care.
        stops += [partial(worker.stop, signal.SIGQUIT) for worker in self.workers]
        with ThreadPoolExecutor(max(1, len(stops))) as pool:
            list(pool.map(lambda stop: stop(), stops))
        for redis in [*self.shards, *([self.redis] if hasattr(self, "redis") else [])]:
            redis.stop()

    def logs(self) -> str:
        webs = "\n".join(f"--- {web.name} ---\n{web.log()[-3000:]}" for web in self.webs[1:])
        return f"{super().logs()}\n{webs}"

    @property
    def worker_names(self) -> dict[str, str]:
        """Queue -> the Celery hostname (before the ``@``) of the worker consuming it."""
        return {"default": f"{self.name}-1", SCALE_QUEUE: f"{self.name}-2"}

    # --- which shard -------------------------------------------------------------------------

    def _layer(self) -> Any:
        # channels-redis's own PubSub layer over the same hosts, in the same order, with the
        # same prefix as the cluster's processes: it picks shards as they do (its consistent
        # hash of the Redis channel name). Made without connecting anything.
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        return RedisPubSubLoopLayer(hosts=[shard.url for shard in self.shards], prefix=prefix)

    def group_shard(self, group: str) -> int:
        layer = self._layer()
        return layer._shards.index(layer._get_shard(layer._get_group_channel_name(group)))

    def channel_shard(self, channel_name: str) -> int:
        layer = self._layer()
        return layer._shards.index(layer._get_shard(channel_name))


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/ws/notifications/"


class Follower(Client):
    """test_faults's client of docs/protocol.md (resumes with ``?last_notification_id``,
    reconnects with backoff and jitter) signed in with a bearer token, on one web process at a
    time: ``move_to(url)`` drops its socket and reconnects to another (``None``: stays away until
    moved again). Keeps every frame with its arrival time and each close's time too; answers
    ``replay.more``; with ``reconnect`` off, connects only once."""

    def __init__(self, url: str, token: str, *, reconnect: bool = True) -> None:
        self.url: str | None = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.reconnect = reconnect
        self.events: list[tuple[float, dict[str, Any]]] = []  # (arrival, event), every frame
        self.connected_to: list[str] = []
        self.snapshots = 0
        self.ws: ClientConnection | None = None
        super().__init__(_Through(self), None)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def closes(self) -> _Closes:
        return self._closes

    @closes.setter
    def closes(self, codes: list[int | None]) -> None:
        self._closes = _Closes(codes)

    def open_socket(self, query: str) -> ClientConnection:
        url = self.url
        if url is None or (self.connected_to and not self.reconnect):
            raise OSError("staying away")
        self.ws = connect(ws_url(url) + query, additional_headers=self.headers, open_timeout=10)
        self.connected_to.append(url)
        return self.ws

    def _handle(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((time.monotonic(), event))
            if event["type"] == "snapshot":
                self.snapshots += 1
        super()._handle(event)
        if event["type"] == "replay.more" and self.ws is not None:
            self.ws.send(
                json.dumps({"type": "resume", "last_notification_id": event["last_notification_id"]})
            )

    def move_to(self, url: str | None) -> None:
        self.url = url
        if self.ws is not None:
            self.ws.close()  # the reading thread sees the close (1000, ours) and reconnects

    def state(self, job_id: str) -> str | None:
        job = self.job(job_id)
        return None if job is None else job["state"]

    def updates(self, job_id: str, *, since: float = 0.0) -> list[dict[str, Any]]:
        """The ``job.update`` payloads of ``job_id`` received after ``since`` (monotonic)."""
        with self._lock:
            return [
                e["job"]
                for at, e in self.events
                if at >= since and e["type"] == "job.update" and e["job"]["id"] == job_id
            ]

    def received(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for _, e in self.events if e["type"] == kind]


class _Through:
    """What Client asks of its stack: here a bearer token and the follower's current web process."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower

    def cookie(self, user: Any) -> str:
        return ""

    def socket(self, cookie: str, *, query: str = "") -> ClientConnection:
        return self.follower.open_socket(query)


class _Closes(list[int | None]):
    """Close codes, as Client keeps them, and when each came (``times``)."""

    def __init__(self, codes: list[int | None]) -> None:
        super().__init__(codes)
        self.times: list[float] = [time.monotonic() for _ in codes]

    def append(self, code: int | None) -> None:
        self.times.append(time.monotonic())
        super().append(code)

    def server(self) -> list[int | None]:
        """The codes of the closes the server decided (not ours, 1000, on a move)."""
        return [code for code in self if code != 1000]


class Stream:
    """``GET /events/`` with a bearer token, read in a thread: every event (with its ``id``) until
    the stream ends; ``closed_code`` is the code of its ``closed`` event, if it sent one."""

    def __init__(self, url: str, token: str, *, last_event_id: int | None = None) -> None:
        parsed = urlparse(url)
        self.connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=60)
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", "/events/", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, (self.response.status, self.response.read())
        self.events: list[dict[str, Any]] = []
        self.closed_code: int | None = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                raw = self.response.readline()  # chunked transfer decoded
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if "data" in fields:
                    event = {"id": fields.get("id"), **json.loads(fields["data"])}
                    self.events.append(event)
                    if event["type"] == "closed":
                        self.closed_code = event["code"]
                        return
                fields = {}
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # AttributeError: closed under the reading thread (http.client drops its file)
        finally:
            self.ended_at = time.monotonic()

    def received(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["type"] == kind]

    def wait_ended(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        if self.connection.sock is not None:
            # Wakes the reading thread, which a close alone leaves blocked in its read.
            with contextlib.suppress(OSError):
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self._thread.join(timeout=5)


def channels_of(user: Any) -> set[str]:
    """The channel names of ``user``'s open sockets and streams (their presence rows)."""
    return set(SocketConnection.objects.filter(user=user).values_list("channel_name", flat=True))

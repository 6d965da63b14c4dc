"""A value that belongs to one OS process and is made anew after a fork.

Celery's prefork pool forks children that inherit module globals but not threads; anything that
owns a thread (the push loop, the progress pump) must be re-created in the child.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessLocal(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._value: T | None = None
        # A fork while another thread held the lock would leave it held in the child forever.
        os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._value = self._factory()
                    self._pid = os.getpid()
        return self._value  # type: ignore[return-value]

    def peek(self) -> T | None:
        """The value if this process has made one, without making it."""
        return self._value if self._pid == os.getpid() else None

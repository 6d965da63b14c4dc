"""A channel layer whose module takes a second to import: long enough for a fork to land while
another thread is importing it (tests/notifications/test_push_after_fork.py)."""

import time

from channels.layers import InMemoryChannelLayer

time.sleep(1.0)


class SlowImportLayer(InMemoryChannelLayer):
    def __init__(self, expiry: int = 60, group_expiry: int = 86400, **redis_options: object) -> None:
        super().__init__(expiry=expiry, group_expiry=group_expiry)  # Redis options do not apply

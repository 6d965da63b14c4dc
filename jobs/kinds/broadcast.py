"""Admin-only: an announcement to every user or to one group, written in batches."""

from __future__ import annotations

from typing import Literal

from django.contrib.auth import get_user_model
from pydantic import BaseModel, ConfigDict, Field

from jobs.context import KindContext
from notifications.inbox import BATCH_SIZE, notify_many

from ..permissions import Power
from .registry import JobKind, register


class BroadcastParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Broadcast an announcement")

    title: str = Field(min_length=1, max_length=200, title="Title")
    body: str = Field("", max_length=5000, title="Message")
    level: Literal["info", "success", "warning", "error"] = Field("info", title="Level")
    group: str = Field(
        "", max_length=150, title="Only this group", description="A group name; empty for everyone."
    )


def run(ctx: KindContext, params: BroadcastParams) -> dict[str, int]:
    users = get_user_model().objects.filter(is_active=True)
    if params.group:
        users = users.filter(groups__name=params.group)
    recipient_ids = list(users.order_by("pk").values_list("pk", flat=True))
    total = len(recipient_ids)
    ctx.progress(0, total, "Notifying")
    sent = 0
    for start in range(0, total, BATCH_SIZE):
        if ctx.cancelled:
            break
        sent += notify_many(
            recipient_ids=recipient_ids[start : start + BATCH_SIZE], title=params.title, body=params.body,
            level=params.level,
        )  # fmt: skip
        ctx.progress(sent, total, f"{sent} of {total} recipients")
    ctx.log(f"Notified {sent} users" + (f" in group {params.group!r}" if params.group else ""))
    return {"recipients": sent}


def label(params: BroadcastParams) -> str:
    """The announcement's title, and its audience when it is one group."""
    audience = f" (to group {params.group})" if params.group else " (to everyone)"
    return f"{params.title}{audience}"


register(
    JobKind(
        name="broadcast",
        unit="recipients",
        title="Broadcast an announcement",
        description="Sends a notification to every user, or to one group, in batches.",
        params_model=BroadcastParams,
        run=run,
        soft_time_limit=600,
        time_limit=660,
        admin_only=True,
        power=Power.BROADCAST.value,
        # An announcement is meant for now: ahead of its sender's other waiting jobs, and of
        # other users' equally served ones. Not retried (retry=NO_RETRY): it is not idempotent.
        priority=10,
        label=label,
    )
)

"""Mark-all-read costs the same statements and sends the same frame however many notifications it
marks (issue 15 §4: it once sent one frame with 20,000 ids); what grows is only the UPDATE's rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications import events, inbox

pytestmark = pytest.mark.django_db


def _mark_all_read(user: Any, monkeypatch: pytest.MonkeyPatch, capture: Any) -> tuple[int, list[str]]:
    """Mark all read; the ``notification.read`` frame's bytes and the statements it ran."""
    frames: list[int] = []

    def recording(*, group: str, event: Any, **kwargs: Any) -> None:
        frames.append(len(events.dumps(event)))

    monkeypatch.setattr(inbox, "push_event", recording)
    with CaptureQueriesContext(connection) as captured, capture(execute=True):
        inbox.notification_mark_all_read(user_id=user.pk)
    (frame,) = frames
    return frame, [q["sql"].split(" ", 1)[0] for q in captured.captured_queries]


def test_mark_all_read_frame_and_statements_do_not_grow_with_the_unread(
    make_user, monkeypatch, django_capture_on_commit_callbacks
):
    few, many = make_user(), make_user()
    inbox.notify_many(recipient_ids=[few.pk] * 2, title="x", topic=None)
    inbox.notify_many(recipient_ids=[many.pk] * 1200, title="x", topic=None)

    few_frame, few_statements = _mark_all_read(few, monkeypatch, django_capture_on_commit_callbacks)
    many_frame, many_statements = _mark_all_read(many, monkeypatch, django_capture_on_commit_callbacks)

    # The same shape; only the digits of the highest id may differ.
    assert abs(many_frame - few_frame) <= 4 and many_frame < 100
    assert many_statements == few_statements

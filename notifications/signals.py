"""Signal receivers: thin, each calls one service (no logic here)."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save

from . import services


def close_sockets_on_logout(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        services.sockets_close_for_session(session_key=session.session_key)


def close_sockets_on_deactivation(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        services.sockets_close_for_user(user_id=instance.pk)


def connect() -> None:
    user_logged_out.connect(close_sockets_on_logout, dispatch_uid="runboard-logout-sockets")
    post_save.connect(
        close_sockets_on_deactivation, sender=get_user_model(), dispatch_uid="runboard-deactivate-sockets"
    )

"""Signal receivers: thin, each calls one service (no logic here). They exist because a credential
can end or change through any entry point (a view, the admin, a management command, the shell,
``clearsessions``), and every one of them must close the live connections opened with it."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from jobs.models import AccessToken

from . import events
from .realtime import presence


def close_sockets_on_logout(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        presence.sockets_close_for_session(session_key=session.session_key)


def close_sockets_of_deleted_session(sender: Any, instance: Any, **kwargs: Any) -> None:
    presence.sockets_close_for_session(session_key=instance.session_key)


def recheck_sockets_of_saved_session(
    sender: Any, instance: Any, created: bool = False, **kwargs: Any
) -> None:
    if not created:
        presence.sockets_recheck_for_session(session_key=instance.session_key)


def close_sockets_of_changed_user(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if not created and set(update_fields or ()) != {"last_login"}:  # every login saves last_login
        presence.sockets_close_changed(user=instance)


def close_sockets_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    presence.sockets_close_for_user(user_id=instance.pk)


def close_sockets_of_token(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    if not created:
        presence.sockets_close_for_token(token_id=instance.pk)


def close_sockets_on_membership_change(
    sender: Any, instance: Any, action: str, model: Any, pk_set: Any = None, **kwargs: Any
) -> None:
    """A user's groups or permissions changed, from either side of the relation (before a
    clear, while the members can still be found)."""
    if action == "pre_clear" or (action in {"post_add", "post_remove"} and pk_set):
        for user_id in _affected(instance, model, pk_set):
            presence.sockets_close_for_user(user_id=user_id, code=events.CLOSE_PRIVILEGES_CHANGED)


def close_sockets_of_group_members(sender: Any, instance: Any, **kwargs: Any) -> None:
    for user_id in _members(instance):
        presence.sockets_close_for_user(user_id=user_id, code=events.CLOSE_PRIVILEGES_CHANGED)


def _affected(instance: Any, model: Any, pk_set: Any) -> list[int]:
    user_model = get_user_model()
    if isinstance(instance, user_model):
        return [instance.pk]
    if pk_set and model is user_model:
        return list(pk_set)
    if pk_set and model is Group:
        return list(user_model.objects.filter(groups__in=pk_set).values_list("pk", flat=True).distinct())
    return _members(instance)


def _members(instance: Any) -> list[int]:
    """The users a group (or a permission, through its groups and users) applies to."""
    user_model = get_user_model()
    if isinstance(instance, Group):
        return list(user_model.objects.filter(groups=instance).values_list("pk", flat=True))
    if isinstance(instance, Permission):
        return list(
            user_model.objects.filter(Q(groups__permissions=instance) | Q(user_permissions=instance))
            .values_list("pk", flat=True)
            .distinct()
        )
    return []


def connect() -> None:
    user_model = get_user_model()
    user_logged_out.connect(close_sockets_on_logout, dispatch_uid="runboard-logout-sockets")
    post_delete.connect(
        close_sockets_of_deleted_session, sender=Session, dispatch_uid="runboard-session-sockets"
    )
    post_save.connect(recheck_sockets_of_saved_session, sender=Session, dispatch_uid="runboard-session-saved")
    post_save.connect(close_sockets_of_changed_user, sender=user_model, dispatch_uid="runboard-user-sockets")
    pre_delete.connect(close_sockets_of_deleted_user, sender=user_model, dispatch_uid="runboard-user-deleted")
    post_save.connect(close_sockets_of_token, sender=AccessToken, dispatch_uid="runboard-token-changed")
    post_delete.connect(close_sockets_of_token, sender=AccessToken, dispatch_uid="runboard-token-deleted")
    pre_delete.connect(close_sockets_of_group_members, sender=Group, dispatch_uid="runboard-group-deleted")
    for relation, uid in [
        (user_model.groups.through, "runboard-user-groups"),
        (user_model.user_permissions.through, "runboard-user-permissions"),
        (Group.permissions.through, "runboard-group-permissions"),
    ]:
        m2m_changed.connect(close_sockets_on_membership_change, sender=relation, dispatch_uid=uid)

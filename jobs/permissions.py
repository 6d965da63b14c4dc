"""Operator powers: named Django permissions, checked by one function on every path.

``is_staff`` alone grants nothing here (it only lets a user into the Django admin, where the
admin's own model permissions apply). Each power is a permission on the Job model
(``jobs.<codename>``), so superusers hold every power and anyone else gets them through Django
groups or direct grants (docs/operations.md, *Operator permissions*).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Q

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.http import HttpRequest


class Power(StrEnum):
    """``app_label.codename`` of each operator power (declared, with descriptions, in
    ``Job.Meta.permissions``)."""

    VIEW_ALL_JOBS = "jobs.view_all_jobs"  # every user's jobs: lists, pages, sockets, SSE, the API
    ACT_ON_ANY_JOB = "jobs.act_on_any_job"  # cancel, retry or re-run another user's job
    LAUNCH_STAFF_KINDS = "jobs.launch_staff_kinds"  # kinds marked admin_only (e.g. primes at scale)
    VIEW_ALL_RESULTS = "jobs.view_all_results"  # another user's result, log, download, error detail
    BROADCAST = "jobs.broadcast"  # notify everyone (the broadcast kind, the admin's launch action)
    USE_OPERATOR_VIEW = "jobs.use_operator_view"  # the operator page, ops.subscribe, /metrics
    CONTROL_QUEUES = "jobs.control_queues"  # pause, resume, drain a kind or a queue (jobs.admission)

    @property
    def codename(self) -> str:
        return self.value.split(".", 1)[1]


def signed_in_user(request: HttpRequest) -> User:
    """``request.user`` in a view only reached signed in (the API's ``AUTH``, ``login_required``):
    the user model, narrowed once here from ``User | AnonymousUser`` for the services."""
    user = request.user
    assert user.is_authenticated, "a view for signed-in users was reached anonymously"
    return user


def has_power(user: Any, power: Power) -> bool:
    """Whether ``user`` (any user object, anonymous included) holds ``power``: an active user
    with the permission, directly, through a group, or as a superuser. The one check for every
    path; Django caches a user's permissions on the user object, so repeated checks in one request
    cost one query pair at most."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.has_perm(power.value))


def powers_of(user: Any) -> frozenset[Power]:
    """``user``'s powers (any user object, anonymous included) by the rule of ``powers_by_user``,
    in one query (none for a superuser or an inactive or anonymous user): a socket's sign-in
    reads them on every connect, and the heartbeat's re-check compares the two, so they must agree
    (``has_perm`` went through the backends in two queries plus every permission's name)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Power)
    return _granted({user.pk}).get(user.pk, frozenset())


def powers_by_user(user_ids: Iterable[int]) -> dict[int, frozenset[Power]]:
    """Every user's powers in two queries, however many users (the heartbeat's re-check of all
    sockets). Inactive users hold none."""
    users = get_user_model().objects.filter(pk__in=set(user_ids)).only("pk", "is_active", "is_superuser")
    return powers_of_users(users)


def powers_of_users(users: Iterable[Any]) -> dict[int, frozenset[Power]]:
    """``powers_by_user`` for user objects already read: one query, however many."""
    active = [user for user in users if user.is_active]
    superusers = {user.pk for user in active if user.is_superuser}
    granted = _granted({user.pk for user in active} - superusers)
    return {
        user.pk: frozenset(Power) if user.pk in superusers else granted.get(user.pk, frozenset())
        for user in active
    }


def _granted(user_ids: set[int]) -> dict[int, frozenset[Power]]:
    """The powers granted to each of ``user_ids``, directly or through a group, in one query
    (users with none are absent)."""
    if not user_ids:
        return {}
    by_codename = {power.codename: power for power in Power}
    rows = (
        Permission.objects.filter(content_type__app_label="jobs", codename__in=by_codename)
        .filter(Q(user__pk__in=user_ids) | Q(group__user__pk__in=user_ids))
        .values_list("codename", "user__pk", "group__user__pk")
    )
    result: dict[int, set[Power]] = {}
    for codename, direct, through_group in rows:
        for pk in (direct, through_group):
            if pk in user_ids:
                result.setdefault(pk, set()).add(by_codename[codename])
    return {pk: frozenset(powers) for pk, powers in result.items()}

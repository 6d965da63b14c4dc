"""Alerts on failure rate and queue wait (issue 16 §14; docs/alerts.md).

An operator subscribes to "the failure rate of kind X is above N % over the last 10 minutes" or
"the oldest job waiting in queue Q has waited more than N s" (``notifications.models.AlertRule``).
The housekeeping process calls ``alerts_evaluate`` every 30 s (``jobs.evaluate_alerts``): it
computes each distinct metric once, at a cost bounded by the number of rules (never by history),
and notifies a subscriber once when an episode starts (the value went above the threshold) and
once when it ends. Each state change is a conditional UPDATE on the state the evaluation read, and
only the call whose UPDATE changed the row notifies: two housekeeping processes evaluating at the
same moment, or a pass working from a stale read, cannot notify twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from dashboard.ops import failure_ratio, queue_names
from jobs.admission import queue_depths
from jobs.kinds.registry import UnknownKind, all_kinds, get_kind
from jobs.models import Job, JobState
from jobs.permissions import Power, powers_of_users
from notifications.inbox import notify
from notifications.models import AlertRule, Level

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Rules one user may hold: each is a little work on every pass, and more is noise, not vigilance.
MAX_RULES_PER_USER = 20
# Where every alert's notification points: the page with the live figures behind it.
ALERT_LINK = "/operations/"
# Bounds of what a rule may ask for (the page's form shows the same).
FAILURE_RATE_MAX_PERCENT = 100.0  # exclusive: a rate is never above 100 %
WINDOW_MINUTES_RANGE = (1, 60)
MIN_JOBS_RANGE = (1, 1000)
QUEUE_WAIT_RANGE_SECONDS = (1.0, 7 * 24 * 3600.0)
# An episode ends only once its value has stayed at or below the threshold this long (Prometheus
# Alertmanager's and Grafana's "keep firing for"): a value hovering around the threshold would
# otherwise start and end an episode, two notifications, at every 30-second pass. A value back
# above within it continues the same episode, silently.
KEEP_FIRING_FOR = timedelta(minutes=5)

Metric = AlertRule.Metric


class AlertRuleInvalid(ValueError):
    """A rule the service refuses; the message is written for the operator who asked for it."""


@dataclass(frozen=True)
class AlertsEvaluated:
    """What one ``alerts_evaluate`` call did: rules evaluated (those of subscribers still holding
    the operator view), episodes started and ended by this call (each one notification)."""

    rules: int
    fired: int
    resolved: int

    @property
    def notified(self) -> int:
        return self.fired + self.resolved


@dataclass(frozen=True)
class AlertRuleStatus:
    """A rule as its page shows it: ``description`` (what it watches) and ``state`` ("firing
    since 10:42 UTC, now 45 %", "ok, now 3 %", "not evaluated yet")."""

    rule: AlertRule
    description: str
    state: str


# --- Words -------------------------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    """ "1 minute", "10 minutes"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _number(value: float) -> str:
    """40.0 -> "40", 33.333 -> "33.3"."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _kind_title(name: str) -> str:
    try:
        return get_kind(name).title
    except UnknownKind:
        return name


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M %Z")


def _unit(rule: AlertRule) -> str:
    return "%" if rule.metric == Metric.FAILURE_RATE else "s"


def _amount(rule: AlertRule, value: float) -> str:
    return f"{_number(value)} {_unit(rule)}"


def _subject(rule: AlertRule) -> str:
    """ "Failure rate of Profile a CSV file" / "Queue wait on csv"."""
    if rule.metric == Metric.FAILURE_RATE:
        return f"Failure rate of {_kind_title(rule.kind)}"
    return f"Queue wait on {rule.queue}"


def alert_rule_description(rule: AlertRule) -> str:
    """What ``rule`` watches, in one sentence for its page."""
    if rule.metric == Metric.FAILURE_RATE:
        return (
            f"{_subject(rule)} above {_amount(rule, rule.threshold)} over {rule.window_minutes} min"
            f" (at least {_plural(rule.min_jobs, 'succeeded or failed job')})"
        )
    return f"{_subject(rule)} above {_amount(rule, rule.threshold)} (the oldest job still waiting)"


def alert_rule_state(rule: AlertRule) -> str:
    """The rule's episode state as its page shows it."""
    if rule.last_evaluated_at is None:
        return "not evaluated yet"
    now = "too few jobs to judge" if rule.last_value is None else f"now {_amount(rule, rule.last_value)}"
    if rule.firing:
        since = f" since {_clock(rule.since)}" if rule.since else ""
        if rule.clear_since is not None:  # ends at clear_since + KEEP_FIRING_FOR if it stays below
            ends = _clock(rule.clear_since + KEEP_FIRING_FOR)
            return f"firing{since}, {now}: back below, resolved at {ends} if it stays so"
        return f"firing{since}, {now}"
    return f"ok, {now}"


# --- Rules -------------------------------------------------------------------------------------


def _in_range(value: float, low: float, high: float, *, what: str, unit: str) -> float:
    if not low <= value <= high:
        raise AlertRuleInvalid(f"{what} must be between {_number(low)} and {_number(high)}{unit}.")
    return value


@transaction.atomic
def alert_rule_create(
    *,
    user: User,
    metric: str,
    threshold: float,
    kind: str = "",
    queue: str = "",
    window_minutes: int = 10,
    min_jobs: int = 5,
) -> AlertRule:
    """Subscribe ``user`` to a metric crossing ``threshold`` (percent for ``failure_rate``, of
    ``kind``; seconds for ``queue_wait``, of ``queue``). Raises ``AlertRuleInvalid`` (a message
    for the user) for an unknown metric, kind or queue, a value out of range, the same rule
    twice, or a user already holding ``MAX_RULES_PER_USER`` rules. Whether the user may hold
    rules at all (the operator view) is the caller's check, and again each evaluation's."""
    if metric == Metric.FAILURE_RATE:
        if kind not in {k.name for k in all_kinds()}:
            raise AlertRuleInvalid("Choose a kind of job from the list.")
        if not 0 <= threshold < FAILURE_RATE_MAX_PERCENT:
            raise AlertRuleInvalid("A failure rate threshold must be at least 0 % and below 100 %.")
        _in_range(window_minutes, *WINDOW_MINUTES_RANGE, what="The window", unit=" minutes")
        _in_range(min_jobs, *MIN_JOBS_RANGE, what="The minimum number of jobs", unit="")
        target = {"kind": kind, "window_minutes": window_minutes, "min_jobs": min_jobs}
    elif metric == Metric.QUEUE_WAIT:
        if queue not in queue_names():
            raise AlertRuleInvalid("Choose a queue from the list.")
        _in_range(threshold, *QUEUE_WAIT_RANGE_SECONDS, what="A queue wait threshold", unit=" s")
        target = {"queue": queue}
    else:
        raise AlertRuleInvalid("Choose what to be alerted about: a failure rate or a queue wait.")
    # The user's row locked first, so two requests at once cannot both pass the cap.
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    mine = AlertRule.objects.filter(subscriber=user)
    if mine.count() >= MAX_RULES_PER_USER:
        raise AlertRuleInvalid(
            f"You have reached the limit of {MAX_RULES_PER_USER} alerts per user: delete one first."
        )
    if mine.filter(metric=metric, threshold=threshold, **target).exists():
        raise AlertRuleInvalid("You already have this alert.")
    return AlertRule.objects.create(subscriber=user, metric=metric, threshold=threshold, **target)


def alert_rule_delete(*, user: User, rule_id: int) -> bool:
    """Delete one of ``user``'s own rules; False if they have none with that id."""
    deleted, _ = AlertRule.objects.filter(pk=rule_id, subscriber=user).delete()
    return bool(deleted)


def alert_rules_of(*, user: User) -> list[AlertRuleStatus]:
    """``user``'s rules, oldest first, with what each watches and its state."""
    return [
        AlertRuleStatus(rule=rule, description=alert_rule_description(rule), state=alert_rule_state(rule))
        for rule in AlertRule.objects.filter(subscriber=user).order_by("id")
    ]


# --- Evaluation ----------------------------------------------------------------------------------


def _failure_counts(wanted: set[tuple[int, str]], now: datetime) -> dict[tuple[int, str], dict[str, int]]:
    """Per (window in minutes, kind) asked for, the jobs of that kind that failed and that
    succeeded in the window before ``now`` (``{(window, kind): {"failed": n, "succeeded": n}}``,
    as ``dashboard.ops.failure_ratio`` takes them): **one** query over the longest window's
    finished jobs, whatever the number of kinds and windows (found by review: one scan per
    distinct window, 60 of them for 60 rules).

    Only the finish time in the WHERE and no GROUP BY (as ``dashboard.ops.finished_last_hour``),
    so the rows come from job_finished_idx: what finished in the window, not all history."""
    if not wanted:
        return {}
    keys = sorted(wanted)
    aggregates: dict[str, Any] = {}
    for i, (window, kind) in enumerate(keys):
        recent = Q(kind=kind, finished_at__gte=now - timedelta(minutes=window))
        aggregates[f"failed_{i}"] = Count("pk", filter=recent & Q(state=JobState.FAILED))
        aggregates[f"succeeded_{i}"] = Count("pk", filter=recent & Q(state=JobState.SUCCEEDED))
    longest = max(window for window, _ in keys)
    since = now - timedelta(minutes=longest)
    row = Job.objects.order_by().filter(finished_at__gte=since, finished_at__lte=now).aggregate(**aggregates)
    return {
        key: {
            JobState.FAILED.value: row[f"failed_{i}"] or 0,
            JobState.SUCCEEDED.value: row[f"succeeded_{i}"] or 0,
        }
        for i, key in enumerate(keys)
    }


def _queue_waits(now: datetime) -> dict[str, float]:
    """Per queue, how long its oldest job still queued has waited, in seconds (0: none waits):
    the Operations page's "Oldest wait" (``jobs.admission.queue_depths``: one query over the
    active jobs)."""
    return {
        depth.queue: depth.oldest_wait_seconds or 0.0 for depth in queue_depths(kinds=all_kinds(), now=now)
    }


def _values(rules: list[AlertRule], now: datetime) -> dict[int, float | None]:
    """Each rule's value now (percent or seconds; None: too few decided jobs to judge), each
    distinct metric computed once."""
    failures = _failure_counts(
        {(rule.window_minutes, rule.kind) for rule in rules if rule.metric == Metric.FAILURE_RATE}, now
    )
    waits = _queue_waits(now) if any(rule.metric == Metric.QUEUE_WAIT for rule in rules) else {}
    values: dict[int, float | None] = {}
    for rule in rules:
        if rule.metric == Metric.FAILURE_RATE:
            finished = failures[(rule.window_minutes, rule.kind)]
            # Cancellations are a user's choice, not a failure: only decided jobs count.
            decided = sum(finished.values())
            values[rule.pk] = round(100 * failure_ratio(finished), 1) if decided >= rule.min_jobs else None
        else:
            values[rule.pk] = round(waits.get(rule.queue, 0.0), 1)
    return values


def _is_above(rule: AlertRule, value: float | None) -> bool:
    return value is not None and value > rule.threshold


def _fired_words(rule: AlertRule, value: float) -> tuple[str, str]:
    title = f"{_subject(rule)} is {_amount(rule, value)} (threshold {_amount(rule, rule.threshold)})"
    if rule.metric == Metric.FAILURE_RATE:
        over = _plural(rule.window_minutes, "minute")
        body = f"Over the last {over}. You are told again when it is back below."
    else:
        body = "The oldest job still waiting in this queue. You are told again when it is back below."
    return title, body


def _resolved_words(
    rule: AlertRule, value: float | None, began: datetime | None, ended: datetime
) -> tuple[str, str]:
    """The "resolved" notification: ``ended`` is when the value went back below (the episode
    ends KEEP_FIRING_FOR later: reporting that instant overstated it, found by review)."""
    subject = _subject(rule)
    subject = subject[0].lower() + subject[1:]  # "failure rate of Profile a CSV file": the kind's title kept
    if value is None:
        title = f"Resolved: {subject}: too few jobs left to judge (threshold {_amount(rule, rule.threshold)})"
    else:
        title = (
            f"Resolved: {subject} is back below {_amount(rule, rule.threshold)} (now {_amount(rule, value)})"
        )
    if began is None:
        return title, ""
    seconds = max(0.0, (ended - began).total_seconds())
    lasted = f"{round(seconds)} s" if seconds < 60 else f"{math.ceil(seconds / 60)} min"
    return title, f"It was above from {_clock(began)} to {_clock(ended)} ({lasted})."


def _change_state(rule: AlertRule, *, firing: bool, value: float | None, now: datetime) -> bool:
    """Move ``rule`` into (``firing``) or out of an episode and notify its subscriber, if the row
    is still in the state this evaluation read (its ``firing`` and ``since``); False when another
    evaluation changed it first (it notified, this one does not). One transaction: a failed
    notification leaves the state unchanged, for the next pass to try again."""
    with transaction.atomic():
        changed = AlertRule.objects.filter(pk=rule.pk, firing=rule.firing, since=rule.since).update(
            firing=firing, since=now, clear_since=None, last_value=value, last_evaluated_at=now
        )
        if not changed:
            return False
        if firing:
            assert value is not None
            title, body = _fired_words(rule, value)
            level = Level.ERROR if rule.metric == Metric.FAILURE_RATE else Level.WARNING
        else:
            title, body = _resolved_words(rule, value, rule.since, rule.clear_since or now)
            level = Level.SUCCESS
        # No topic: subscribing to the alert is the choice; toast and browser push follow the
        # subscriber's preferences as for every notification.
        notify(recipient_id=rule.subscriber_id, title=title, body=body, level=level, link=ALERT_LINK)
    return True


def alerts_evaluate(*, now: datetime | None = None) -> AlertsEvaluated:
    """Evaluate every rule whose subscriber is active and holds ``Power.USE_OPERATOR_VIEW`` (the
    others are left as they are and told nothing): each distinct metric computed once, then per
    rule ok -> firing notifies once (level error for a failure rate, warning for a queue wait,
    linking to the Operations page), firing -> ok notifies once (success) and ends the episode,
    and no change only records the value and the time (no notification).

    ``since`` is "when the rule entered its current state", so the conditional UPDATE cannot
    mistake a later episode for the one it read. Queries: one for the rules and their
    subscribers, one for their powers, one for every failure rate (the longest window), one for the queue
    waits (if any rule wants them), one UPDATE per distinct value unchanged, and per change an
    UPDATE and its notification.
    """
    now = now or timezone.now()
    rules = list(AlertRule.objects.select_related("subscriber").order_by("id"))
    powers = powers_of_users({rule.subscriber_id: rule.subscriber for rule in rules}.values())
    rules = [rule for rule in rules if Power.USE_OPERATOR_VIEW in powers.get(rule.subscriber_id, ())]
    if not rules:
        return AlertsEvaluated(rules=0, fired=0, resolved=0)
    values = _values(rules, now)
    fired = resolved = 0
    unchanged: dict[float | None, list[int]] = defaultdict(list)
    clearing: list[int] = []  # firing, at or below the threshold for the first time since
    back_above: list[int] = []  # firing, clearing, and above it again: the same episode
    for rule in rules:
        value = values[rule.pk]
        above = _is_above(rule, value)
        if not rule.firing and above:
            fired += _change_state(rule, firing=True, value=value, now=now)
        elif rule.firing and not above and rule.clear_since is None:
            clearing.append(rule.pk)
        elif rule.firing and not above and now - rule.clear_since >= KEEP_FIRING_FOR:  # type: ignore[operator]
            resolved += _change_state(rule, firing=False, value=value, now=now)
        else:  # no change (or still within KEEP_FIRING_FOR): the value and the time only
            unchanged[value].append(rule.pk)
            if rule.firing and above and rule.clear_since is not None:
                back_above.append(rule.pk)
    for value, ids in unchanged.items():
        AlertRule.objects.filter(pk__in=ids).update(last_value=value, last_evaluated_at=now)
    for rule_id in clearing:  # the first pass below keeps the rule firing: the clock starts
        AlertRule.objects.filter(pk=rule_id, firing=True, clear_since__isnull=True).update(
            clear_since=now, last_evaluated_at=now, last_value=values[rule_id]
        )
    if back_above:
        AlertRule.objects.filter(pk__in=back_above, firing=True).update(clear_since=None)
    return AlertsEvaluated(rules=len(rules), fired=fired, resolved=resolved)

"""List, add, pause, resume and run job schedules from the command line (validated like the admin)."""

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from jobs import schedules
from jobs.exceptions import RateLimited
from jobs.models import JobSchedule


class Command(BaseCommand):
    help = (
        "Job schedules: list | add NAME --kind KIND --user NAME (--every SECONDS | --crontab"
        " 'M H DoM Mon DoW' [--timezone ZONE]) [--params JSON] [--paused] | pause NAME | resume NAME"
        " | run-now NAME"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="Every schedule with its next run, last run and that run's outcome.")
        add = sub.add_parser("add", help="Add a schedule (the same checks as the admin form).")
        add.add_argument("name")
        add.add_argument("--kind", required=True)
        add.add_argument("--user", required=True, help="The owner: every run is their job.")
        add.add_argument("--params", default="{}", help="The kind's parameters as JSON.")
        add.add_argument("--every", type=int, default=None, help="Seconds between runs.")
        add.add_argument("--crontab", default="", help='Five fields, e.g. "0 3 * * *".')
        add.add_argument("--timezone", default="UTC", help="IANA name the crontab is read in.")
        add.add_argument("--paused", action="store_true", help="Add it paused.")
        for action in ("pause", "resume", "run-now"):
            sub.add_parser(action, help=f"{action.capitalize()} a schedule by name.").add_argument("name")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            for status in schedules.schedules_status():
                row = status.schedule
                self.stdout.write(
                    "\t".join(
                        [
                            row.name,
                            row.kind,
                            row.owner.get_username(),
                            status.timing,
                            "enabled" if row.enabled else "paused",
                            f"next {status.next_run_at.isoformat() if status.next_run_at else '—'}",
                            f"last {status.last_run_at.isoformat() if status.last_run_at else 'never'}",
                            status.last_outcome or "—",
                        ]
                    )
                )
            return
        if action == "add":
            self._add(**options)
            return
        schedule = JobSchedule.objects.filter(name=options["name"]).first()
        if schedule is None:
            raise CommandError(f"No schedule named {options['name']!r}.")
        if action == "run-now":
            try:
                job = schedules.schedule_run(schedule_id=schedule.pk, manual=True)
            except RateLimited as exc:
                raise CommandError(f"{schedule.name}: {exc}") from exc
            if job is None:
                raise CommandError(f"{schedule.name}: its owner is inactive; nothing was run.")
            self.stdout.write(str(job.id))
        else:
            schedules.schedule_set_enabled(schedule_id=schedule.pk, enabled=action == "resume")
            self.stdout.write(f"{'Resumed' if action == 'resume' else 'Paused'} {schedule.name}.")

    def _add(self, *, name: str, kind: str, user: str, params: str, every: int | None, crontab: str,
             timezone: str, paused: bool, **_: Any) -> None:  # fmt: skip
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"No user named {user!r}.")
        try:
            parsed_params = json.loads(params)
        except ValueError as exc:
            raise CommandError(f"--params is not valid JSON: {exc}") from None
        longest = JobSchedule._meta.get_field("name").max_length or 150
        if len(name) > longest:
            raise CommandError(f"NAME: at most {longest} characters (this one has {len(name)}).")
        if JobSchedule.objects.filter(name=name).exists():
            raise CommandError(f"A schedule named {name!r} exists already.")
        schedule = JobSchedule(
            name=name, kind=kind, params=parsed_params, owner=owner, every_seconds=every, crontab=crontab,
            timezone=timezone, enabled=not paused,
        )  # fmt: skip
        try:
            schedule = schedules.schedule_save(schedule=schedule)
        except IntegrityError:  # the same name saved meanwhile
            raise CommandError(f"A schedule named {name!r} exists already.") from None
        except ValidationError as exc:
            flags = {"every_seconds": "every", "owner": "user"}
            lines = [
                f"--{flags.get(field, field).replace('_', '-')}: {msg}"
                for field, msgs in exc.message_dict.items()
                for msg in msgs
            ]
            raise CommandError("\n".join(["Schedule not saved:", *lines])) from None
        self.stdout.write(f"Added {schedule.name} (next run {schedules.schedule_next_run(schedule) or '—'}).")

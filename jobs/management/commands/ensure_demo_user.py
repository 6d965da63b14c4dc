"""Create (or refresh) the demo login used by `make run`, and print its credentials."""

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create or update the demo user; its password is kept in var/demo-password between runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password-file", default=str(settings.VAR_DIR / "demo-password"), type=Path)

    def handle(self, *args: Any, username: str, password_file: Path, **options: Any) -> None:
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        user, created = get_user_model().objects.get_or_create(username=username)
        # Staff, so the demo can also open /admin/.
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} demo login: username {username!r}, password {password!r}")

"""Create the VAPID key pair browser push signs with, in VAR_DIR/vapid.json (readable by its owner only)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from notifications import webpush
from notifications.conf import app_settings


class Command(BaseCommand):
    help = (
        "Write a VAPID key pair for browser push to VAR_DIR/vapid.json unless it exists (--force replaces "
        "it, which invalidates every browser's subscription). Prints the public key and the environment "
        "lines to use in production instead of the file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Replace an existing key pair.")
        parser.add_argument(
            "--quiet", action="store_true", help="Print only the public key (no private key on screen)."
        )

    def handle(self, *args: Any, force: bool = False, quiet: bool = False, **options: Any) -> None:
        path = webpush.vapid_file()
        created = False
        if force or not path.exists():
            keys = {**webpush.generate_vapid_keypair(), "created_at": timezone.now().isoformat()}
            created = _write_private(path, json.dumps(keys, indent=2) + "\n", replace=force)
        if not created:
            try:
                keys = json.loads(path.read_text())
                if not (isinstance(keys.get("public_key"), str) and isinstance(keys.get("private_key"), str)):
                    raise ValueError("no public_key and private_key")
            except (OSError, ValueError, AttributeError) as exc:
                raise CommandError(f"{path} is unreadable ({exc}); use --force to replace it.") from exc
        self._report(path, keys, created=created, quiet=quiet)

    def _report(self, path: Path, keys: dict[str, str], *, created: bool, quiet: bool) -> None:
        self.stdout.write(f"{'Wrote' if created else 'Kept the existing'} VAPID keys in {path}")
        self.stdout.write(f"Public key: {keys['public_key']}")
        if app_settings.VAPID_PRIVATE_KEY:
            self.stdout.write(
                self.style.WARNING(
                    "RUNBOARD_VAPID_PRIVATE_KEY is set, so the keys in the environment are used."
                )
            )
        if quiet:
            return
        self.stdout.write("For production, set these in the environment (keep the private key secret):")
        self.stdout.write(f"RUNBOARD_VAPID_PUBLIC_KEY={keys['public_key']}")
        self.stdout.write(f"RUNBOARD_VAPID_PRIVATE_KEY={keys['private_key']}")
        self.stdout.write(f"RUNBOARD_VAPID_SUBJECT={app_settings.VAPID_SUBJECT}")


def _write_private(path: Path, text: str, *, replace: bool) -> bool:
    """Write atomically, 0600 from the start (never briefly world-readable); False if another process
    created the file first and ``replace`` is off (two first runs at once keep one key pair)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".vapid-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
            return True
        try:
            os.link(temp, path)  # fails if the file exists, unlike a rename
        except FileExistsError:
            return False
        return True
    finally:
        Path(temp).unlink(missing_ok=True)

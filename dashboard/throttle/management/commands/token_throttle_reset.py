from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.throttle.tokens import token_failures_reset


class Command(BaseCommand):
    help = (
        "Lift the pause on client addresses that sent too many failed bearer tokens: the given "
        "addresses (an IPv6 address stands for its /64), or every address with --all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addresses", nargs="*", metavar="ADDRESS")
        parser.add_argument(
            "--all", action="store_true", dest="everyone", help="forget every address's failed tokens"
        )

    def handle(self, *args: Any, addresses: list[str], everyone: bool, **options: Any) -> None:
        if not addresses and not everyone:
            raise CommandError("Name one or more addresses, or pass --all.")
        count = token_failures_reset(addresses=None if everyone else addresses)
        self.stdout.write(f"{count} address(es) reset.")

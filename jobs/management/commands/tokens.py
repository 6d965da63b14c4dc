"""Create, list and revoke personal access tokens from the command line."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.tokens import token_create, token_list, token_revoke


class Command(BaseCommand):
    help = "Manage API tokens: create --user NAME --name LABEL | list --user NAME | revoke --user NAME ID"

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token and print it (shown only once).")
        create.add_argument("--user", required=True)
        create.add_argument("--name", required=True)
        create.add_argument("--expires-days", type=float, default=None)
        listing = sub.add_parser("list", help="List a user's tokens.")
        listing.add_argument("--user", required=True)
        revoke = sub.add_parser("revoke", help="Revoke a token by its id.")
        revoke.add_argument("--user", required=True)
        revoke.add_argument("token_id", type=int)

    def handle(self, *args: Any, action: str, user: str, **options: Any) -> None:
        try:
            owner = get_user_model().objects.get(username=user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {user!r}.") from None
        if action == "create":
            token, raw = token_create(
                user=owner, name=options["name"], expires_in_days=options["expires_days"]
            )
            self.stderr.write(f"Created token {token.pk} ({token.name}); it is shown only now:")
            self.stdout.write(raw)
        elif action == "list":
            for token in token_list(user=owner):
                used = token.last_used_at.isoformat() if token.last_used_at else "never used"
                self.stdout.write(f"{token.pk}\t{token.prefix}…\t{token.name}\t{used}")
        elif not token_revoke(user=owner, token_id=options["token_id"]):
            raise CommandError(f"{user} has no token {options['token_id']}.")
        else:
            self.stdout.write(f"Revoked token {options['token_id']}.")

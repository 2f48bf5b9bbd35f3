from __future__ import annotations

import getpass
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds.models import Workspace


class Command(BaseCommand):
    help = (
        "Register a client workspace (or update an existing one of the same name). The API key and secret "
        "come from MPFEED_API_KEY / MPFEED_API_SECRET or a prompt, never from the command line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--pod", required=True, choices=Workspace.Pod.values)
        parser.add_argument(
            "--endpoint-url", default="", help="Events API base URL (sandbox pod only), e.g. http://127.0.0.1:8765/v2"
        )
        parser.add_argument("--environment", default=None, choices=Workspace.Environment.values)
        parser.add_argument("--rate-limit", type=float, default=None, help="Batches per second (default 270).")
        parser.add_argument("--no-credentials", action="store_true", help="Create it awaiting credentials.")

    def handle(self, *args, **options):
        found = Workspace.objects.filter(name=options["name"]).first()
        created = found is None
        workspace = Workspace(name=options["name"]) if found is None else found
        workspace.pod = options["pod"]
        workspace.endpoint_url = options["endpoint_url"]
        if options["environment"]:
            workspace.environment = options["environment"]
        if options["rate_limit"] is not None:
            workspace.rate_limit = options["rate_limit"]
        try:
            workspace.full_clean(exclude=["slug", "api_key", "api_secret"])
        except ValidationError as e:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in e.message_dict.items())) from None

        if options["no_credentials"]:
            workspace.save()
        else:
            key, secret = self._credentials()
            workspace.set_credentials(key, secret)
        self.stdout.write(
            f"{'Created' if created else 'Updated'} workspace {workspace.name!r} (id {workspace.pk}, "
            f"{workspace.get_pod_display()}, {workspace.environment}, credentials "
            f"{'set' if workspace.has_credentials else 'not set'})."
        )

    def _credentials(self) -> tuple[str, str]:
        key = os.environ.get("MPFEED_API_KEY", "").strip()
        secret = os.environ.get("MPFEED_API_SECRET", "").strip()
        if not (key and secret) and not sys.stdin.isatty():
            raise CommandError(
                "Set MPFEED_API_KEY and MPFEED_API_SECRET (or run in a terminal to be asked), or pass --no-credentials."
            )
        if not key:
            key = input("API key: ").strip()
        if not secret:
            secret = getpass.getpass("API secret: ").strip()
        if not key or not secret:
            raise CommandError("Both the API key and the API secret are needed.")
        return key, secret

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from feeds.models import Workspace


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored credential under the newest key in FERNET_KEYS. Put the new key first in "
        "FERNET_KEYS (keeping the old ones after it), run this, then the old keys can be removed."
    )

    def handle(self, *args, **options):
        count = 0
        with transaction.atomic():
            for workspace in Workspace.objects.select_for_update().only("pk", "api_key", "api_secret"):
                # Reading decrypts with any key; saving encrypts with the first (newest).
                workspace.save(update_fields=["api_key", "api_secret"])
                count += 1
        self.stdout.write(f"Re-encrypted the credentials of {count} workspace(s) under the newest key.")

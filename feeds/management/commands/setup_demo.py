from __future__ import annotations

from django.core.management.base import BaseCommand

from feeds.demo import setup_demo


class Command(BaseCommand):
    help = "Create the demo staff login, a workspace on the built-in sandbox, its mapping, job and data file."

    def handle(self, *args, **options):
        demo = setup_demo()
        self.stdout.write(
            f"Demo ready: workspace {demo['workspace'].name!r} on the sandbox, data file {demo['data']}.\n"
            f"Staff login: {demo['username']} / {demo['password']}"
        )

from __future__ import annotations

from django.core.management.base import BaseCommand

from sandbox import cli as sandbox_cli


class Command(BaseCommand):
    help = (
        "Run the sandbox Events API (a fake of mParticle's, for local use and tests): "
        "sandbox_api --port 8765 [--rate-limit N] [--credential KEY:SECRET] [fault options]. See --help."
    )

    def run_from_argv(self, argv):
        # The sandbox has its own argument parser (it also runs without Django: python -m sandbox).
        sandbox_cli.main(argv[2:])

    def handle(self, *args, **options):  # pragma: no cover - run_from_argv does the work
        sandbox_cli.main([])

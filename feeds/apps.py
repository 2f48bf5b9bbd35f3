from contextlib import suppress
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _ensure_schedules(sender, **kwargs) -> None:
    from feeds import tasks

    tasks.ensure_sweeper()


class FeedsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "feeds"
    verbose_name = "Feeds"

    def ready(self) -> None:
        from feeds import checks, queueing, signals, tasks  # noqa: F401  (registers the system checks and signal handlers)
        from feeds.security import create_sqlite_file, owner_only_sqlite_file

        queueing.use_queue(tasks.Queue())  # the engine hands runs to django-q2 (it names no task system itself)

        create_sqlite_file()  # owner-only from its first byte (SQLite would create it with the umask's mode)

        # WhiteNoise serves STATIC_ROOT (filled by collectstatic): there from the start, even empty.
        with suppress(OSError):
            Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)

        post_migrate.connect(_ensure_schedules, sender=self)
        connection_created.connect(owner_only_sqlite_file, dispatch_uid="mpfeed-owner-only-sqlite")

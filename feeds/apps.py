from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_schedules(sender, **kwargs) -> None:
    from feeds.sync import ensure_schedules

    ensure_schedules()


class FeedsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "feeds"
    verbose_name = "Feeds"

    def ready(self) -> None:
        from feeds import checks, signals, tasks  # noqa: F401  (registers the system checks and signal handlers)

        post_migrate.connect(_ensure_schedules, sender=self)

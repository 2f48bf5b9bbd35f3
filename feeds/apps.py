from django.apps import AppConfig


class FeedsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "feeds"
    verbose_name = "Feeds"

    def ready(self) -> None:
        from feeds import checks  # noqa: F401  (registers the system checks)

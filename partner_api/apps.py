from django.apps import AppConfig


class PartnerApiConfig(AppConfig):
    name = "partner_api"
    verbose_name = "Partner API"
    default_auto_field = "django.db.models.BigAutoField"

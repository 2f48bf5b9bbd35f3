"""The partner API's URL map (mounted at /api/v1/ by mpfeed_site/urls.py), built from partner_api.api.ROUTES."""

from django.urls import path

from partner_api import openapi
from partner_api.api import ROUTES
from partner_api.auth import endpoint, not_found

app_name = "partner_api"
urlpatterns = [
    path("openapi.json", openapi.description, name="openapi"),
    *[path(route, endpoint(operations), name=name) for route, name, operations in ROUTES],
    path("<path:rest>", not_found, name="not_found"),
    path("", not_found, name="root"),
]

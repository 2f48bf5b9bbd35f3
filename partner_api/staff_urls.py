"""The staff page of partner API tokens (mounted at /api-tokens/ by mpfeed_site/urls.py)."""

from django.urls import path

from partner_api import views

app_name = "api_tokens"
urlpatterns = [
    path("", views.token_list, name="list"),
    path("<int:token_id>/revoke/", views.token_revoke, name="revoke"),
]

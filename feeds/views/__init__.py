"""Views, one module per area; each module has its own `urlpatterns` (collected in feeds/urls.py)."""

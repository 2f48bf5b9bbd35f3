from django.urls import path

from feeds import views

app_name = "feeds"
urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("inbox/<uuid:inbox_id>/", views.inbox, name="inbox"),
]

"""(being built: job pages)"""

from django.http import HttpResponse
from django.urls import path


def placeholder(request, **kwargs):
    return HttpResponse("job")


urlpatterns = [
    path("workspaces/<slug:slug>/jobs/new/", placeholder, name="job_new"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/", placeholder, name="job_edit"),
]

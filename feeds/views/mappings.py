"""(being built: mapping editor and data sheet)"""

from django.http import HttpResponse
from django.urls import path


def placeholder(request, **kwargs):
    return HttpResponse("mapping")


urlpatterns = [
    path("workspaces/<slug:slug>/mappings/new/", placeholder, name="mapping_new"),
    path("workspaces/<slug:slug>/mappings/<int:mapping_id>/", placeholder, name="mapping_edit"),
    path("workspaces/<slug:slug>/mappings/<int:mapping_id>/datasheet/", placeholder, name="datasheet"),
]

"""(being built: the run page)"""

from django.http import HttpResponse
from django.urls import path


def run(request, run_id):  # placeholder until the run page lands
    return HttpResponse(f"run {run_id}")


urlpatterns = [path("runs/<int:run_id>/", run, name="run")]

from __future__ import annotations

from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect


def home(request):
    # The staff pages come with the onboarding work; until then the admin is the home.
    return redirect("admin:index")


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"}) if request.GET.get("format") == "json" else HttpResponse("OK")

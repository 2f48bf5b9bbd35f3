"""(being built: the client's credential page)"""

from django.http import HttpResponse
from django.urls import path


def connect(request, token):  # placeholder
    return HttpResponse("connect")


urlpatterns = [path("connect/<str:token>/", connect, name="connect")]

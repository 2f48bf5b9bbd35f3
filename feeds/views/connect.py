"""The client's credential page: a one-time link where the client's contact enters the Feed's key and secret.

No login: the random token in the URL is the only key (only its hash is stored). The first GET moves it into the
session and redirects to /connect/, so the token is in no later address bar, history entry or access-log line.
The page shows nothing but the workspace's name and the partner's name, and asks for the key, the secret and an
mParticle pod (never an endpoint URL: a sandbox endpoint is set by staff). A POST counts an attempt, tests the
*new* credentials on an unsaved copy of the workspace, and stores them only when mParticle accepts them, using the
link up at the same moment (feeds.actions.hand_over: used at once, or held for staff to confirm). The token is
never logged by this module, and Django's own "Not Found: /connect/<token>/" line is suppressed for the
responses made here (see _private).
"""

from __future__ import annotations

import logging
from functools import wraps
from typing import cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponseNotAllowed, QueryDict
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_protect

from feeds import actions
from feeds.forms import ConnectForm, pod_choices
from feeds.models import CredentialLink, Workspace
from feeds.mparticle.client import CREDENTIALS, TRANSIENT, Answer
from feeds.security import client_ip

log = logging.getLogger(__name__)

GONE_STATUS = {"revoked": 410, "used": 410, "expired": 410}


# --------------------------------------------------------------------------------------------------- form


def _fresh_inputs(form: ConnectForm) -> None:
    """Show the form again without the key and the secret (the pod stays)."""
    if form.is_bound:
        data = cast(QueryDict, form.data).copy()  # the request's (the stubs say only Mapping)
        data["api_key"] = ""
        data["api_secret"] = ""
        form.data = data


# ------------------------------------------------------------------------------------------------ answers


def explain(answer: Answer) -> str:
    """The connection test's answer in plain words, for the client's contact. It names no host, status or
    address: the page must not tell anything of the network it was sent from (staff find the details in the
    log)."""
    if answer.delivered:
        return "mParticle accepted these credentials."
    if answer.outcome in CREDENTIALS:
        return (
            "mParticle did not accept this key and secret; check you copied the Feed's key and secret "
            "(not the workspace's), and the pod."
        )
    if answer.outcome in TRANSIENT:  # 429, 5xx, network
        return "mParticle could not be reached or is busy; try again in a few minutes."
    return f"The test did not succeed; try again, or ask {settings.PARTNER_NAME} for help."


# -------------------------------------------------------------------------------------------------- pages


# The URL holds the token: no page of this view may send it on in a Referer. Pages without a form send no
# Referer at all. The form page cannot use "no-referrer": under it browsers send `Origin: null` with the form's
# POST, which Django's CSRF check refuses (403). "strict-origin" sends the origin only (https://host/, never the
# path), in the Origin of the POST and in the Referer of the page's stylesheet and script requests.
PAGE_REFERRER_POLICY = "no-referrer"
FORM_REFERRER_POLICY = "strict-origin"


def _private(view):
    """Every answer of the page: not cached, no token sent onwards in a Referer (see above), and not logged by
    Django with its path (django.request logs 4xx responses as "<reason>: <path>")."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        add_never_cache_headers(response)
        response.headers.setdefault("Referrer-Policy", PAGE_REFERRER_POLICY)
        if response.status_code >= 400:
            response._has_been_logged = True
        return response

    return wrapper


def _page(request, template: str, context: dict | None = None, status: int = 200):
    # The client's page shows no staff chrome nor queued staff messages, even to a logged-in staff member.
    base = {"partner_name": settings.PARTNER_NAME, "user": AnonymousUser(), "messages": ()}
    return render(request, template, {**base, **(context or {})}, status=status)


def _gone(request, status: int):
    # The same words for unknown, revoked, used and expired links: the page reveals nothing about the link.
    return _page(request, "feeds/connect_gone.html", status=status)


def _too_many(request, link: CredentialLink):
    log.warning("credential link %s (workspace %s): attempt limit reached", link.pk, link.workspace_id)
    return _page(request, "feeds/connect_too_many.html", {"workspace_name": link.workspace.name}, status=429)


# The link's id, once its token has been seen: the token leaves the address bar (and the access logs of every
# later request) after the first one.
SESSION_KEY = "mpfeed-credential-link"


@_private
@csrf_protect
def connect(request, token: str | None = None):
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    if token is not None:
        link = CredentialLink.find(token)
    else:
        link_id = request.session.get(SESSION_KEY)
        link = CredentialLink.objects.select_related("workspace").filter(pk=link_id).first() if link_id else None
    if link is None:
        log.info("credential page: unknown link")
        return _gone(request, 404)
    if not link.usable:
        log.info("credential link %s (workspace %s): refused, %s", link.pk, link.workspace_id, link.state)
        return _gone(request, GONE_STATUS[link.state])
    if token is not None and request.method == "GET":
        request.session[SESSION_KEY] = link.pk
        return redirect("feeds:connect_page")
    workspace = link.workspace

    if request.method == "GET":
        if link.exhausted:
            return _too_many(request, link)
        initial = {"pod": workspace.pod} if workspace.pod in dict(pod_choices()) else {}
        return _form_page(request, workspace, ConnectForm(workspace, initial=initial))

    if link.exhausted:
        return _too_many(request, link)
    form = ConnectForm(workspace, request.POST)
    if not form.is_valid():  # nothing was tested: no attempt counted
        _fresh_inputs(form)
        return _form_page(request, workspace, form)

    # The new credentials are tested before anything is stored; only a test mParticle judged is counted.
    handover = actions.hand_over(link, form.probe(), client_ip(request) or "unknown")
    if handover.refused == actions.ADDRESS_LIMIT:
        return _page(request, "feeds/connect_too_many.html", {"per_address": True}, status=429)
    if handover.refused == actions.LINK_GONE:
        return _gone(request, 410)
    if handover.refused or handover.answer is None:
        return _too_many(request, link)
    explanation = explain(handover.answer)
    if not handover.answer.delivered:
        _fresh_inputs(form)
        return _form_page(request, workspace, form, explanation=explanation)
    if handover.workspace is None:
        return _gone(request, 410)  # revoked, or used by another request, while this one was testing
    request.session.pop(SESSION_KEY, None)
    context = {"workspace_name": workspace.name, "explanation": explanation, "held": handover.held}
    return _page(request, "feeds/connect_done.html", context)


def _form_page(request, workspace: Workspace, form: ConnectForm, explanation: str = ""):
    context = {"workspace_name": workspace.name, "form": form, "explanation": explanation}
    response = _page(request, "feeds/connect.html", context)
    response.headers["Referrer-Policy"] = FORM_REFERRER_POLICY
    return response

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
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from feeds import actions
from feeds.forms import ConnectForm, pod_choices
from feeds.models import CredentialLink, Workspace
from feeds.mparticle.client import CREDENTIALS, TRANSIENT, Answer
from feeds.security import client_ip, embed_origins, framed_policy, parent_origin

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
    return _hand_over(request, link)


def _hand_over(request, link: CredentialLink, embed: dict | None = None):
    """The form of an open link (GET) or its hand-over (POST), for the page and its embeddable variant."""
    workspace = link.workspace
    if request.method == "GET":
        if link.exhausted:
            return _too_many(request, link)
        initial = {"pod": workspace.pod} if workspace.pod in dict(pod_choices()) else {}
        return _form_page(request, workspace, ConnectForm(workspace, initial=initial), embed=embed)

    if link.exhausted:
        return _too_many(request, link)
    form = ConnectForm(workspace, request.POST)
    if not form.is_valid():  # nothing was tested: no attempt counted
        _fresh_inputs(form)
        return _form_page(request, workspace, form, embed=embed)

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
        return _form_page(request, workspace, form, explanation=explanation, embed=embed)
    if handover.workspace is None:
        return _gone(request, 410)  # revoked, or used by another request, while this one was testing
    if embed is None:
        request.session.pop(SESSION_KEY, None)
    context = {"workspace_name": workspace.name, "explanation": explanation, "held": handover.held, "embed": embed}
    return _page(request, "feeds/connect_done.html", context)


def _form_page(request, workspace: Workspace, form: ConnectForm, explanation: str = "", embed: dict | None = None):
    context = {"workspace_name": workspace.name, "form": form, "explanation": explanation, "embed": embed}
    response = _page(request, "feeds/connect.html", context)
    response.headers["Referrer-Policy"] = FORM_REFERRER_POLICY
    return response


# ----------------------------------------------------------------------------------------- the embeddable form


@csrf_exempt  # no cookie is read: the signed ticket is the POST's only authority (CredentialLink.embed_ticket)
@xframe_options_exempt
@_private
def connect_embed(request, token: str | None = None):
    """The credential form inside a partner's own product: GET /connect/embed/<token>/?origin=<partner page>,
    then a POST to /connect/embed/ carrying the signed ticket instead of a session or a CSRF cookie (both are
    third-party cookies in the partner's frame). When the credentials pass, the page tells the parent window —
    at its origin only — with a postMessage (static/feeds/connect_embed.js).

    Its answers may be framed only by the origin the form was opened for (or, without one, by every origin in
    MPFEED_EMBED_ORIGINS and the workspace's own embed origins); with none allowed, by nobody — X-Frame-Options DENY and frame-ancestors 'none', as
    every other page."""
    response, ancestors = _embed(request, token)
    response.headers["Content-Security-Policy"] = framed_policy(ancestors)
    if not ancestors:
        response.headers["X-Frame-Options"] = "DENY"
    return response


def _embed(request, token: str | None):
    # Who may frame it: MPFEED_EMBED_ORIGINS and the link's workspace's own (Workspace.allowed_embed_origins).
    if request.method == "GET" and token is not None:
        link = CredentialLink.find(token)
        allowed = link.workspace.allowed_embed_origins if link is not None else embed_origins()
        origin = parent_origin(request.GET.get("origin", ""), allowed)
    elif request.method == "POST" and token is None:
        link, origin = CredentialLink.from_embed_ticket(request.POST.get("ticket", ""))
        if link is None:
            log.info("embedded credential form: a POST without a valid ticket refused")
            return _page(request, "feeds/connect_gone.html", {"stale": True}, status=403), embed_origins()
        allowed = link.workspace.allowed_embed_origins
        if origin and origin not in allowed:
            origin = None  # staff took the origin off the list meanwhile
    else:
        return HttpResponseNotAllowed(["GET"] if token is not None else ["POST"]), []
    ancestors = ([origin] if origin else allowed) if origin is not None else []
    if origin is None:
        log.info("embedded credential form: asked for an origin that is not allowed for the link's workspace")
        return _gone(request, 403), []
    if link is None:
        log.info("embedded credential form: unknown link")
        return _gone(request, 404), ancestors
    if not link.usable:
        log.info("credential link %s (workspace %s): refused, %s", link.pk, link.workspace_id, link.state)
        return _gone(request, GONE_STATUS[link.state]), ancestors
    embed = {"ticket": link.embed_ticket(origin), "origin": origin, "workspace": link.workspace.slug}
    return _hand_over(request, link, embed), ancestors

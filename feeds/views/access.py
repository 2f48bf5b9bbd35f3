"""Who may see what: staff pages, and the lookups that check it."""

from __future__ import annotations

from functools import wraps
from typing import Any, Protocol, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404

from feeds.models import Mapping, SyncJob, SyncRun, Workspace


class StaffView(Protocol):
    """A view behind `staff_required`, which tells the permissions it needs (the tests read them)."""

    permissions: dict[str, str | None]

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse: ...


def staff_required(view=None, *, read: str | None = None, write: str | None = None):
    """Staff only, holding the model permission the request needs — the rule the admin applies: `read` for GET
    and HEAD (e.g. "view_workspace"), `write` for POST (e.g. "change_workspace"); any other method, or one without
    a permission, is not allowed (405). Anonymous users go to the login page; the others get 403."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not (request.user.is_active and request.user.is_staff):
                raise PermissionDenied("Staff only.")
            # Only POST writes: Django's CSRF check skips OPTIONS and TRACE, so they may never act.
            needed = {"GET": read, "HEAD": read, "POST": write}.get(request.method)
            if needed is None:
                return HttpResponseNotAllowed([m for m, p in (("GET", read), ("POST", write)) if p])
            if not request.user.has_perm(needed if "." in needed else f"feeds.{needed}"):  # another app's: dotted
                raise PermissionDenied(f"You need the permission to {needed.replace('_', ' ', 1)}s.")
            return view(request, *args, **kwargs)

        staff_view = cast(StaffView, wrapper)
        staff_view.permissions = {"read": read, "write": write}
        return staff_view

    return decorate(view) if view is not None else decorate


def parse_id(value: str) -> int | None:
    """A database id typed in a form or a query: ASCII digits that fit a 64-bit integer, else None (a 400 for
    the caller, never a 500: "²" is a digit to str.isdigit, and a huge number overflows SQLite)."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)


def get_workspace(slug: str) -> Workspace:
    return get_object_or_404(Workspace, slug=slug)


def get_job(workspace: Workspace, job_id: int) -> SyncJob:
    return get_object_or_404(SyncJob.objects.select_related("mapping", "workspace"), pk=job_id, workspace=workspace)


def get_mapping(workspace: Workspace, mapping_id: int) -> Mapping:
    return get_object_or_404(Mapping, pk=mapping_id, workspace=workspace)


def get_run(run_id: int) -> SyncRun:
    return get_object_or_404(SyncRun.objects.select_related("job", "workspace"), pk=run_id)


# Replays (the admin's actions, the run page) change deliveries and runs: the permission to change deliveries,
# even where the admin pages are read-only.
REPLAY = "change_delivery"


def may(request, *codenames: str) -> bool:
    """Whether the user holds all these feeds permissions (e.g. "view_delivery"): what a page shows of other
    models than its own."""
    return all(request.user.has_perm(f"feeds.{codename}") for codename in codenames)

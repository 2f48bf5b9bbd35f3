"""Who may see what: staff pages, and the lookups that check it."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth import get_permission_codename
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from feeds.models import Delivery, Mapping, SyncJob, SyncRun, Workspace


def staff_required(view):
    """Anonymous users go to the login page; logged-in users who are not staff get 403."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapper


def get_workspace(slug: str) -> Workspace:
    return get_object_or_404(Workspace, slug=slug)


def get_job(workspace: Workspace, job_id: int) -> SyncJob:
    return get_object_or_404(SyncJob.objects.select_related("mapping", "workspace"), pk=job_id, workspace=workspace)


def get_mapping(workspace: Workspace, mapping_id: int) -> Mapping:
    return get_object_or_404(Mapping, pk=mapping_id, workspace=workspace)


def get_run(run_id: int) -> SyncRun:
    return get_object_or_404(SyncRun.objects.select_related("job", "workspace"), pk=run_id)


def can_replay(request) -> bool:
    """Whether this user may replay deliveries (from the admin or the run page)."""
    # Replays change deliveries and runs: the model permission, even where the admin pages are read-only.
    opts = Delivery._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

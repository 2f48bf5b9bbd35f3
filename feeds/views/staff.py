"""Staff pages: the workspaces at a glance, onboarding a workspace, its credential links, jobs and runs."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers

from feeds import sync
from feeds.health import workspace_health
from feeds.models import CredentialLink, SyncRun, Workspace, WorkspacePace
from feeds.views.access import get_job, get_workspace, may, staff_required


class WorkspaceForm(forms.ModelForm):
    endpoint_url = forms.URLField(
        label="Endpoint URL", required=False, assume_scheme="https", help_text="Only for the sandbox pod."
    )

    class Meta:
        model = Workspace
        fields = ["name", "pod", "endpoint_url", "environment", "rate_limit", "confirm_new_credentials"]


@staff_required(read="view_workspace")
def home(request):
    return render(request, "feeds/home.html", {"healths": workspace_health()})


@staff_required(read="add_workspace", write="add_workspace")
def workspace_new(request):
    form = WorkspaceForm(request.POST or None, initial={"environment": "development"})
    if request.method == "POST" and form.is_valid():
        workspace = form.save()
        messages.success(request, f"Workspace {workspace.name} created. Next: send the client a credential link.")
        return redirect("feeds:workspace", slug=workspace.slug)
    return render(request, "feeds/workspace_new.html", {"form": form})


@staff_required(read="view_workspace")
def workspace(request, slug):
    workspace = get_workspace(slug)

    # Each section only for those who may view its model (None: not shown), as the admin would.
    def shown(codename, rows):
        return rows if may(request, codename) else None

    context = {
        "workspace": workspace,
        "links": shown("view_credentiallink", workspace.credential_links.select_related("created_by")[:10]),
        "mappings": shown("view_mapping", workspace.mappings.all()),
        "jobs": shown("view_syncjob", workspace.jobs.select_related("mapping")),
        "runs": shown("view_syncrun", workspace.runs.select_related("job")[:15]),
        "alerts": shown("view_alertevent", workspace.alerts.all()[:5]),
        "pace": WorkspacePace.objects.filter(workspace=workspace).first(),
        "new_link": request.session.pop(f"new-link-{workspace.pk}", None),
    }
    response = render(request, "feeds/workspace.html", context)
    if context["new_link"]:
        add_never_cache_headers(response)  # the page shows a link's token: kept in no cache
    return response


@staff_required(write="add_credentiallink")
def link_issue(request, slug):
    workspace = get_workspace(slug)
    link, token = CredentialLink.issue(workspace, request.user)
    url = request.build_absolute_uri(reverse("feeds:connect", args=[token]))
    if not may(request, "view_workspace"):
        # The workspace page would refuse this user: show the link here, once, rather than keep it anywhere.
        response = render(request, "feeds/link_created.html", {"workspace": workspace, "new_link": url})
        add_never_cache_headers(response)
        return response
    # Shown once, on the next page only (then gone from the session): the token itself is never stored.
    request.session[f"new-link-{workspace.pk}"] = url
    messages.success(request, "Credential link created. Copy it now: it is shown only once.")
    return redirect("feeds:workspace", slug=workspace.slug)


@staff_required(write="change_credentiallink")
def link_revoke(request, slug, link_id):
    workspace = get_workspace(slug)
    link = workspace.credential_links.filter(pk=link_id).first()
    if link is not None:
        link.revoke()
        messages.success(request, "The link was revoked.")
    return redirect("feeds:workspace", slug=workspace.slug)


@staff_required(write="change_syncjob")
def job_run(request, slug, job_id):
    job = get_job(get_workspace(slug), job_id)
    try:
        run = sync.start_run(job, trigger=SyncRun.Trigger.MANUAL, user=request.user)
    except sync.SyncError as e:
        messages.error(request, str(e))
        return redirect("feeds:workspace", slug=slug)
    sync.enqueue_run(run)
    messages.success(request, f"Run #{run.pk} queued.")
    return redirect("feeds:run", run_id=run.pk)


@staff_required(write="change_workspace")
def promote(request, slug):
    """Development → production, once staff have checked the first runs."""
    workspace = get_workspace(slug)
    if workspace.environment != Workspace.Environment.PRODUCTION:
        if not workspace.runs.filter(status__in=SyncRun.SUCCEEDED_STATUSES).exists():
            messages.error(request, "Promote after at least one successful run in development.")
            return redirect("feeds:workspace", slug=slug)
        Workspace.objects.filter(pk=workspace.pk).update(environment=Workspace.Environment.PRODUCTION)
        messages.success(request, f"{workspace.name} now sends to the production environment.")
    return redirect("feeds:workspace", slug=slug)


@staff_required(write="change_workspace")
def credentials_confirm(request, slug):
    """Use the credentials a client handed over, held for a staff member's confirmation."""
    workspace = get_workspace(slug)
    if workspace.confirm_pending_credentials():
        resumed = sync.resume_blocked_runs(workspace)
        messages.success(
            request,
            f"The new credentials (key {workspace.api_key_hint}) are in use."
            + (f" Runs resumed: {', '.join(f'#{pk}' for pk in resumed)}." if resumed else ""),
        )
    return redirect("feeds:workspace", slug=slug)


@staff_required(write="change_workspace")
def credentials_discard(request, slug):
    workspace = get_workspace(slug)
    if workspace.has_pending_credentials:
        workspace.discard_pending_credentials()
        messages.success(request, "The credentials received were discarded; the ones in use stay.")
    return redirect("feeds:workspace", slug=slug)


urlpatterns = [
    path("", home, name="home"),
    path("workspaces/new/", workspace_new, name="workspace_new"),
    path("workspaces/<slug:slug>/", workspace, name="workspace"),
    path("workspaces/<slug:slug>/links/", link_issue, name="link_issue"),
    path("workspaces/<slug:slug>/links/<int:link_id>/revoke/", link_revoke, name="link_revoke"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/run/", job_run, name="job_run"),
    path("workspaces/<slug:slug>/promote/", promote, name="promote"),
    path("workspaces/<slug:slug>/credentials/confirm/", credentials_confirm, name="credentials_confirm"),
    path("workspaces/<slug:slug>/credentials/discard/", credentials_discard, name="credentials_discard"),
]

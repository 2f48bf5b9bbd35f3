"""Staff pages: the workspaces at a glance, onboarding a workspace, its credential links, jobs and runs."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from feeds import actions, health, sync
from feeds.forms import WorkspaceForm
from feeds.models import CredentialLink, SyncRun, WorkspacePace
from feeds.views.access import get_job, get_workspace, may, parse_id, staff_required


@staff_required(read="view_workspace")
def home(request):
    return render(request, "feeds/home.html", {"healths": health.workspace_health()})


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
        "health": health.of(workspace),
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
    try:
        if workspace.promote():
            messages.success(request, f"{workspace.name} now sends to the production environment.")
    except ValidationError as e:
        messages.error(request, " ".join(e.messages))
    return redirect("feeds:workspace", slug=slug)


def _tell(request, done: actions.Done) -> None:
    messages.add_message(request, done.level, done.text)


@staff_required(write="change_workspace")
def credentials_confirm(request, slug):
    """Use the credentials a client handed over, held for a staff member's confirmation."""
    _tell(request, actions.confirm_credentials(get_workspace(slug)))
    return redirect("feeds:workspace", slug=slug)


@staff_required(write="change_workspace")
def credentials_discard(request, slug):
    _tell(request, actions.discard_credentials(get_workspace(slug)))
    return redirect("feeds:workspace", slug=slug)


def _back(request, slug):
    """Back to the run page the button was on (a `run` id posted with it), else the workspace page."""
    run_id = parse_id(request.POST.get("run", ""))
    if run_id is not None and SyncRun.objects.filter(pk=run_id, workspace__slug=slug).exists():
        return redirect("feeds:run", run_id=run_id)
    return redirect("feeds:workspace", slug=slug)


@staff_required(write="change_workspace")
def workspace_pause(request, slug):
    """No new run starts, and the unfinished ones stop (blocked) at their next step (feeds.actions.pause)."""
    _tell(request, actions.pause(get_workspace(slug), request.user))
    return _back(request, slug)


@staff_required(write="change_workspace")
def workspace_resume(request, slug):
    """The workspace sends again once its credentials pass a test; the runs the pause blocked go on."""
    _tell(request, actions.resume(get_workspace(slug)))
    return _back(request, slug)

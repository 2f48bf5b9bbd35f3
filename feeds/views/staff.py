"""Staff pages: the workspaces at a glance, onboarding a workspace, its credential links, jobs and runs."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from feeds import actions, health, sync
from feeds.forms import WorkspaceAlertsForm, WorkspaceEmbedForm, WorkspaceForm
from feeds.models import CredentialLink, SyncRun, Workspace, WorkspacePace
from feeds.security import embed_origins
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
        "alerts_form": WorkspaceAlertsForm(instance=workspace) if may(request, "change_workspace") else None,
        "embed_form": WorkspaceEmbedForm(instance=workspace) if may(request, "change_workspace") else None,
        "global_embed_origins": embed_origins(),
        "global_alerts": _global_alerts(),
    }
    response = render(request, "feeds/workspace.html", context)
    if context["new_link"]:
        add_never_cache_headers(response)  # the page shows a link's token: kept in no cache
    return response


def _global_alerts() -> dict:
    """What the deployment's own alert settings are, shown beside a workspace's (never the webhook's secret)."""
    return {"emails": settings.MPFEED_ALERT_EMAILS, "webhook": bool(settings.MPFEED_ALERT_WEBHOOK_URL)}


@staff_required(read="change_workspace", write="change_workspace")
def workspace_alerts(request, slug):
    """A workspace's own alert recipients and webhook (beside the global settings)."""
    workspace = get_workspace(slug)
    form = WorkspaceAlertsForm(request.POST or None, instance=workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Alert settings of {workspace.name} saved.")
        return redirect("feeds:workspace", slug=workspace.slug)
    context = {"workspace": workspace, "alerts_form": form, "global_alerts": _global_alerts()}
    return render(request, "feeds/workspace_alerts.html", context)


@staff_required(read="change_workspace", write="change_workspace")
def workspace_embed(request, slug):
    """The partner pages that may frame this workspace's embedded credential form (beside MPFEED_EMBED_ORIGINS)."""
    workspace = get_workspace(slug)
    form = WorkspaceEmbedForm(request.POST or None, instance=workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Embed origins of {workspace.name} saved.")
        return redirect("feeds:workspace", slug=workspace.slug)
    context = {"workspace": workspace, "embed_form": form, "global_embed_origins": embed_origins()}
    return render(request, "feeds/workspace_embed.html", context)


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


@staff_required(read="change_credentiallink", write="change_credentiallink")
def link_revoke(request, slug, link_id):
    """GET: what revoking the link does, and a button; POST: revoke it."""
    workspace = get_workspace(slug)
    link = get_object_or_404(workspace.credential_links.select_related("created_by"), pk=link_id)
    if request.method == "POST":
        link.revoke()
        messages.success(request, "The link was revoked.")
        return redirect("feeds:workspace", slug=workspace.slug)
    return _confirm(
        request,
        workspace,
        title=f"Revoke a credential link of {workspace.name}?",
        lines=[
            f"The link created {timezone.localtime(link.created_at):%Y-%m-%d %H:%M}"
            + (f" by {link.created_by}" if link.created_by else "")
            + f" is {link.state}.",
            "Once revoked it stops working at once, also for a client's contact who has it open; there is no "
            "undo: create a new link to send instead.",
        ],
        button="Revoke the link",
        refusal="" if link.usable else f"This link is {link.state} already: there is nothing to revoke.",
    )


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


@staff_required(read="change_workspace", write="change_workspace")
def promote(request, slug):
    """Development → production, once staff have checked the first runs. GET: what it does, and a button."""
    workspace = get_workspace(slug)
    if request.method == "POST":
        _tell(request, actions.promote(workspace))
        return redirect("feeds:workspace", slug=slug)
    production = workspace.environment == Workspace.Environment.PRODUCTION
    return _confirm(
        request,
        workspace,
        title=f"Promote {workspace.name} to production?",
        lines=actions.PROMOTE_WARNING,
        button="Promote to production",
        refusal=f"{workspace.name} sends to production already." if production else workspace.promotion_refusal(),
    )


@staff_required(read="change_workspace", write="change_workspace")
def demote(request, slug):
    """Production → development: the way back from a promotion. GET: what it does, and a button."""
    workspace = get_workspace(slug)
    if request.method == "POST":
        _tell(request, actions.demote(workspace))
        return redirect("feeds:workspace", slug=slug)
    development = workspace.environment == Workspace.Environment.DEVELOPMENT
    return _confirm(
        request,
        workspace,
        title=f"Move {workspace.name} back to development?",
        lines=actions.DEMOTE_WARNING,
        button="Move back to development",
        refusal=f"{workspace.name} sends to development already." if development else "",
    )


def _confirm(request, workspace, *, title: str, lines, button: str, refusal: str | None):
    """A confirmation page: what will happen, a button that POSTs to the same address, and a way out. With a
    refusal, only why it cannot be done."""
    context = {"workspace": workspace, "title": title, "lines": lines, "button": button, "refusal": refusal or ""}
    return render(request, "feeds/confirm.html", context)


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

"""Staff pages for sync jobs: the source and its settings, the schedule, the endpoint mode, the push inbox."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse

from feeds import tasks
from feeds.forms import JobForm
from feeds.models import SyncJob
from feeds.preview import preview_job
from feeds.sources import registry as source_registry
from feeds.views.access import get_job, get_workspace, may, staff_required

Kind = SyncJob.SourceKind
RUNS_PER_PAGE = 20


def _context(request, workspace, form, job=None, new_token: str | None = None) -> dict:
    kind = form["source_kind"].value() or Kind.FILE
    kinds = []
    for spec in source_registry.KINDS:
        example = spec.example_text()
        kinds.append(
            {
                "value": spec.value,
                "label": spec.label,
                "help": spec.help,
                "example": example,
                "rows": example.count("\n") + 1,
                "current": spec.value == kind,
            }
        )
    context = {"workspace": workspace, "form": form, "job": job, "kinds": kinds, "new_token": new_token}
    if job is not None:
        context["schedule"] = tasks.kept_schedule(job)
        context["runs"] = None  # not shown without the permission to view runs
        if may(request, "view_syncrun"):
            runs = job.runs.order_by("-created_at", "-pk").defer(
                "mapping_rules", "source_config", "cursor", "cursor_before"
            )
            context["runs"] = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("runs"))
        if job.source_kind == Kind.INBOX:
            context["push_url"] = request.build_absolute_uri(reverse("feeds:inbox", args=[job.inbox_id]))
    return context


@staff_required(read="add_syncjob", write="add_syncjob")
def job_new(request, slug):
    workspace = get_workspace(slug)
    kind = request.GET.get("kind")
    kind = kind if kind in Kind.values else Kind.FILE
    mappings = list(workspace.mappings.all()[:2])
    initial = {
        "source_kind": kind,
        "source_config": source_registry.source_kind(kind).example_text(),
        "mapping": mappings[0] if len(mappings) == 1 else None,
    }
    form = JobForm(request.POST or None, workspace=workspace, initial=initial)
    if request.method == "POST" and form.is_valid():
        job = form.save()
        messages.success(request, f"Job {job.name} created.")
        return redirect("feeds:job_edit", slug=workspace.slug, job_id=job.pk)
    return render(request, "feeds/job_form.html", _context(request, workspace, form))


@staff_required(read="view_syncjob", write="change_syncjob")
def job_edit(request, slug, job_id):
    workspace = get_workspace(slug)
    job = get_job(workspace, job_id)
    form = JobForm(request.POST or None, instance=job, workspace=workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Job {job.name} saved.")
        return redirect("feeds:job_edit", slug=workspace.slug, job_id=job.pk)
    if form.is_bound:
        job = get_job(workspace, job_id)  # the form wrote the refused values on its copy
    return render(request, "feeds/job_form.html", _context(request, workspace, form, job))


@staff_required(write="change_syncjob")
def job_inbox_token(request, slug, job_id):
    """A new push token, shown in this answer only: it is not stored anywhere (not even in the session),
    only its hash is kept on the job. The previous token stops working."""
    workspace = get_workspace(slug)
    job = get_job(workspace, job_id)
    if job.source_kind != Kind.INBOX:
        messages.error(request, "Only push inbox jobs have a token.")
        return redirect("feeds:job_edit", slug=workspace.slug, job_id=job.pk)
    token = job.new_inbox_token()
    form = JobForm(instance=job, workspace=workspace)
    response = render(request, "feeds/job_form.html", _context(request, workspace, form, job, new_token=token))
    response["Cache-Control"] = "no-store"
    return response


@staff_required(read="view_syncjob")
def job_preview(request, slug, job_id):
    """The first records of the job's source through its mapping; nothing is sent."""
    job = get_job(get_workspace(slug), job_id)
    preview = preview_job(job, limit=10)
    context = {
        "workspace": job.workspace,
        "job": job,
        "preview": preview,
        "endpoints": [
            (path, len(batches), json.dumps(batches, indent=2, ensure_ascii=False))
            for path, batches in preview.by_endpoint()
        ],
    }
    return render(request, "feeds/job_preview.html", context)

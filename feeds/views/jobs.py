"""Staff pages for sync jobs: the source and its settings, the schedule, the endpoint mode, the push inbox."""

from __future__ import annotations

import json
from typing import cast

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path, reverse

from feeds import tasks
from feeds.forms import JobSourceForm
from feeds.models import SyncJob
from feeds.preview import preview_job
from feeds.sources import registry as source_registry
from feeds.views.access import get_job, get_workspace, staff_required

Kind = SyncJob.SourceKind


class JobForm(JobSourceForm):
    """A job in one workspace; its source is changed as in the admin (JobSourceForm, SyncJob.set_source)."""

    source_config = forms.CharField(
        label="Source settings (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text="A JSON object; what it holds depends on the source kind (see the help and examples below).",
    )
    schedule_minutes = forms.IntegerField(
        label="Every N minutes",
        required=False,
        min_value=1,
        help_text="Run every this many minutes, or give a cron expression instead. Both empty: on demand only.",
    )

    field_order = [
        "name", "mapping", "source_kind", "source_config", "new_source_secret", "clear_source_secret",
        "endpoint_mode", "enabled", "schedule_minutes", "schedule_cron",
    ]  # fmt: skip

    class Meta:
        model = SyncJob
        fields = [
            "name", "mapping", "source_kind", "source_config", "endpoint_mode", "enabled", "schedule_minutes",
            "schedule_cron",
        ]  # fmt: skip
        labels = {"schedule_cron": "Or a cron expression"}

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.instance.workspace = workspace
        mapping = cast(forms.ModelChoiceField, self.fields["mapping"])
        mapping.queryset = workspace.mappings.all()
        # A label of this form's own: the stubs type label_from_instance as a method only (Django calls the attribute).
        mapping.label_from_instance = lambda m: f"{m.name} (version {m.version})"  # type: ignore[method-assign,assignment]
        for name in ("enabled", "clear_source_secret"):
            self.fields[name].widget.attrs["class"] = "auto-width"
        config = self.initial.get("source_config")
        if not isinstance(config, str):
            self.initial["source_config"] = json.dumps(config or {}, indent=2)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if SyncJob.objects.filter(workspace=self.workspace, name=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("This workspace already has a job with this name.")
        return name

    def clean_source_config(self) -> dict:
        text = self.cleaned_data["source_config"].strip()
        if not text:
            return {}
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise forms.ValidationError(f"This is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}).") from e
        if not isinstance(config, dict):
            raise forms.ValidationError('The source settings must be a JSON object: {"name": value, …}.')
        return config


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


urlpatterns = [
    path("workspaces/<slug:slug>/jobs/new/", job_new, name="job_new"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/", job_edit, name="job_edit"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/inbox-token/", job_inbox_token, name="job_inbox_token"),
    path("workspaces/<slug:slug>/jobs/<int:job_id>/preview/", job_preview, name="job_preview"),
]

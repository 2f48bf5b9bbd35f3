"""Staff pages for sync jobs: the source and its settings, the schedule, the endpoint mode, the push inbox."""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import path, reverse

from feeds import tasks
from feeds.models import SyncJob
from feeds.preview import preview_job
from feeds.sources import SourceError
from feeds.sources.build import build_source
from feeds.views.access import get_job, get_workspace, staff_required

Kind = SyncJob.SourceKind

# What each source kind reads, and settings to start from (README, "Sources").
EXAMPLES = {
    Kind.FILE: {"path": "exports/orders-*.csv.gz", "format": "csv", "delimiter": ",", "incremental": False},
    Kind.SQL: {
        "database": "crm",
        "query": "SELECT id, email, plan, updated_at FROM customers",
        "cursor_column": "updated_at",
        "key_column": "id",
        "batch_size": 1000,
    },
    Kind.HTTP: {
        "url": "https://api.partner.example/v1/events?since={cursor}",
        "records_path": "data",
        "next": {"type": "link", "path": "links.next"},
        "cursor_field": "updated_at",
        "key_field": "id",
    },
    Kind.INBOX: {},
}
HELP = {
    Kind.FILE: (
        "path: one file or a glob (** for subfolders) in the source folder (MPFEED_SOURCE_ROOT), relative to it "
        "or absolute; nothing outside it is read, links included. Files are read in name order. format: csv or ndjson (by default from "
        "the extension). delimiter: one character, tab or auto. encoding: a Python codec (utf-8). compression: "
        "auto, gzip or none. incremental: true to read only lines and files added since the last run."
    ),
    Kind.SQL: (
        "database: a name from MPFEED_SOURCE_DATABASES. query: a single SELECT (or WITH … SELECT), run read-only. "
        "cursor_column (with key_column when it is not unique): read only rows after the last one sent. "
        "batch_size: rows per page."
    ),
    Kind.HTTP: (
        "url: on a host listed in MPFEED_HTTP_SOURCE_HOSTS; {cursor} takes the last cursor_field value. "
        "records_path: where the records are in each page. next: {type: link, path}, {type: cursor, path, param} "
        "or {type: link_header}; without it, one page. key_field names a record. The Authorization header is "
        "set below, never here."
    ),
    Kind.INBOX: (
        "No settings: the partner POSTs NDJSON or a JSON array to the job's push URL with its token. Pushed "
        "records are forwarded every minute by default."
    ),
}


def example_text(kind: str) -> str:
    return json.dumps(EXAMPLES.get(kind, {}), indent=2)


class JobForm(forms.ModelForm):
    """The source's Authorization header is write-only: the input is always empty, and empty keeps it."""

    source_config = forms.CharField(
        label="Source settings (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        help_text="A JSON object; what it holds depends on the source kind (see the help and examples below).",
    )
    new_source_secret = forms.CharField(
        label="Authorization header",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="HTTP sources only: the header's value, e.g. 'Bearer …'. Write-only; leave empty to keep it.",
    )
    clear_source_secret = forms.BooleanField(label="Remove the stored Authorization header", required=False)
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
        self.original_kind = self.instance.source_kind if self.instance.pk else None
        self.fields["mapping"].queryset = workspace.mappings.all()
        self.fields["mapping"].label_from_instance = lambda m: f"{m.name} (version {m.version})"
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

    def clean_new_source_secret(self) -> str:
        secret = self.cleaned_data["new_source_secret"]
        if "\n" in secret or "\r" in secret:
            raise forms.ValidationError("The header value must be on one line.")
        return secret

    def clean(self):
        data = super().clean()
        kind, config = data.get("source_kind"), data.get("source_config")
        if data.get("new_source_secret"):
            if kind and kind != Kind.HTTP:
                self.add_error("new_source_secret", "Only HTTP sources send an Authorization header.")
            elif data.get("clear_source_secret"):
                self.add_error("clear_source_secret", "Either enter a new header or remove the stored one.")
        if kind and config is not None and "source_config" not in self.errors:
            try:
                # A placeholder header: only the settings are checked here, never the stored secret.
                build_source(kind, config, secret="x" if kind == Kind.HTTP else "", job_id=self.instance.pk)
                check_reachable(kind, config)
            except SourceError as e:
                self.add_error("source_config", f"{str(e)[:1].upper()}{str(e)[1:]}.")
        return data

    def save(self, commit=True):
        job = super().save(commit=False)
        if self.cleaned_data.get("new_source_secret"):
            job.source_secret = self.cleaned_data["new_source_secret"]
        elif self.cleaned_data.get("clear_source_secret"):
            job.source_secret = ""
        if self.original_kind and self.original_kind != job.source_kind:
            job.cursor = None  # a position in the old source means nothing in the new one
        if commit:
            job.save()
        return job


def check_reachable(kind: str, config: dict) -> None:
    """What the source only finds out when a run starts, said while the settings are being edited."""
    if kind == Kind.SQL:
        from feeds.sources.sql import source_databases

        databases = source_databases()
        if config.get("database") not in databases:
            known = ", ".join(sorted(databases)) or "none are configured"
            raise SourceError(f"unknown source database {config.get('database')!r} (MPFEED_SOURCE_DATABASES: {known})")


def _context(request, workspace, form, job=None, new_token: str | None = None) -> dict:
    kind = form["source_kind"].value() or Kind.FILE
    kinds = []
    for value, label in Kind.choices:
        example = example_text(value)
        kinds.append(
            {
                "value": value,
                "label": label,
                "help": HELP[value],
                "example": example,
                "rows": example.count("\n") + 1,
                "current": value == kind,
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
        "source_config": example_text(kind),
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

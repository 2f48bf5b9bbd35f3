"""Every form of the feeds app: the admin's, the staff pages', and the client's credential page. The views and
the admin import them from here; the rules they check live on the models (SyncJob.set_source, Mapping.prepare_rules,
Workspace.promotion_refusal)."""

from __future__ import annotations

import json
from typing import cast

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from feeds import mapping as mapping_rules
from feeds.models import (
    MAX_SAMPLE_CHARS,
    Mapping,
    MappingConflict,
    OutputChanged,
    SampleFormat,
    SyncJob,
    Workspace,
    validate_one_line,
)


class AlertSettingsMixin(forms.ModelForm):
    """A workspace's own alert recipients and webhook, beside the global settings (feeds.alerts): the workspace
    page's form and the admin's. The webhook's secret is write-only (the input is always empty; empty keeps it),
    and the rules (e-mail addresses, a public webhook URL) are Workspace.clean's."""

    alert_emails = forms.CharField(
        label="Alert e-mails",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="Addresses separated by commas or lines; they get this workspace's alerts beside "
        "MPFEED_ALERT_EMAILS.",
    )
    alert_webhook_url = forms.URLField(
        label="Alert webhook URL",
        required=False,
        assume_scheme="https",
        max_length=500,
        help_text="This workspace's alerts are POSTed here too, beside MPFEED_ALERT_WEBHOOK_URL (a public address).",
    )
    new_alert_webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The key of the X-Mpfeed-Signature HMAC for this webhook. Write-only; leave empty to keep it.",
    )
    clear_alert_webhook_secret = forms.BooleanField(label="Remove the stored webhook secret", required=False)

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("new_alert_webhook_secret") and data.get("clear_alert_webhook_secret"):
            self.add_error("clear_alert_webhook_secret", "Either enter a new secret or remove the stored one.")
        return data

    def _apply_alert_secret(self, workspace: Workspace) -> None:
        if self.cleaned_data.get("new_alert_webhook_secret"):
            workspace.alert_webhook_secret = self.cleaned_data["new_alert_webhook_secret"]
        elif self.cleaned_data.get("clear_alert_webhook_secret"):
            workspace.alert_webhook_secret = ""


class WorkspaceAlertsForm(AlertSettingsMixin):
    """The workspace page's alert settings."""

    class Meta:
        model = Workspace
        fields = ["alert_emails", "alert_webhook_url"]

    def save(self, commit=True):
        workspace = super().save(commit=False)
        self._apply_alert_secret(workspace)
        if commit:
            workspace.save()
        return workspace


EMBED_ORIGINS_HELP = (
    "Partner pages that may frame this workspace's embedded credential form, beside MPFEED_EMBED_ORIGINS: "
    "origins (scheme://host[:port], no path, e.g. https://app.partner.example), separated by commas or lines."
)


class WorkspaceEmbedForm(forms.ModelForm):
    """The workspace page's embed origins (the rule and the normalising are Workspace.clean's)."""

    class Meta:
        model = Workspace
        fields = ["embed_origins"]
        labels = {"embed_origins": "Embed origins"}
        help_texts = {"embed_origins": EMBED_ORIGINS_HELP}
        widgets = {"embed_origins": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})}


class WorkspaceAdminForm(AlertSettingsMixin):
    """Credentials are write-only: the inputs are always empty, and empty means "keep what is stored". The status
    only changes through the actions (pause, resume, test credentials), and production is reached as the staff
    page's "Promote" reaches it."""

    endpoint_url = forms.URLField(
        label="Endpoint URL",
        required=False,
        assume_scheme="https",
        help_text="Only for the sandbox pod: the Events API base URL, ending in /v2.",
    )
    new_api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. Leave empty to keep the stored key.",
    )
    new_api_secret = forms.CharField(
        label="API secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored secret.",
    )

    class Meta:
        model = Workspace
        help_texts = {"embed_origins": EMBED_ORIGINS_HELP}
        widgets = {"embed_origins": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})}
        fields = [
            "name",
            "slug",
            "pod",
            "endpoint_url",
            "environment",
            "rate_limit",
            "data_plan_id",
            "data_plan_version",
            "confirm_new_credentials",
            "alert_emails",
            "alert_webhook_url",
            "embed_origins",
        ]  # the status is set by what staff do (pause, resume, credential tests), never typed in

    def clean_environment(self) -> str:
        # Going to production from the form is a promotion: the staff page's rule (Workspace.promotion_refusal).
        environment = self.cleaned_data["environment"]
        stored = Workspace.objects.filter(pk=self.instance.pk).values_list("environment", flat=True).first()
        if stored == Workspace.Environment.DEVELOPMENT and environment == Workspace.Environment.PRODUCTION:
            refusal = self.instance.promotion_refusal()
            if refusal:
                raise forms.ValidationError(refusal)
        return environment

    def clean(self):
        super().clean()
        data = self.cleaned_data
        key, secret = data.get("new_api_key"), data.get("new_api_secret")
        if bool(key) != bool(secret):
            stored = self.instance.pk and self.instance.has_credentials
            if not stored:
                raise forms.ValidationError("Enter both the API key and the API secret.")
        return data

    def save(self, commit=True):
        workspace = super().save(commit=False)
        self._apply_alert_secret(workspace)
        key, secret = self.cleaned_data.get("new_api_key"), self.cleaned_data.get("new_api_secret")
        if key or secret:
            workspace.set_credentials(key or workspace.api_key, secret or workspace.api_secret)
        elif commit:
            workspace.save()
        return workspace


class JobSourceForm(forms.ModelForm):
    """What the job page and the admin share to change a job's source: its kind and settings and the write-only
    Authorization header (the input is always empty; empty keeps it). Both check and apply it through
    SyncJob.set_source, so both faces refuse the same settings and both reset the reading position when the kind
    changes."""

    new_source_secret = forms.CharField(
        label="Authorization header",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="HTTP sources only: the header's value, e.g. 'Bearer …'. Write-only; leave empty to keep it.",
    )
    clear_source_secret = forms.BooleanField(label="Remove the stored Authorization header", required=False)

    class Meta:
        model = SyncJob
        fields = ["source_kind", "source_config"]

    def clean_new_source_secret(self) -> str:
        secret = self.cleaned_data["new_source_secret"]
        if "\n" in secret or "\r" in secret:
            raise forms.ValidationError("The header value must be on one line.")
        return secret

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if "source_config" in data and data["source_config"] is None:
            data["source_config"] = {}  # an empty box: no settings (the inbox's)
        kind, config = data.get("source_kind"), data.get("source_config")
        if data.get("new_source_secret") and data.get("clear_source_secret"):
            self.add_error("clear_source_secret", "Either enter a new header or remove the stored one.")
        elif kind and config is not None and not self.has_error("source_config"):
            try:
                self.instance.check_source(kind, config, secret=data.get("new_source_secret"))
            except ValidationError as e:
                for field, errors in e.message_dict.items():
                    self.add_error("new_source_secret" if field == "source_secret" else field, errors)
        return data

    def save(self, commit=True):
        job = super().save(commit=False)
        data = self.cleaned_data
        secret = data.get("new_source_secret") or ("" if data.get("clear_source_secret") else None)
        job.set_source(data["source_kind"], data["source_config"], secret=secret)
        if commit:
            job.save()
        return job


class SyncJobAdminForm(JobSourceForm):
    class Meta:
        model = SyncJob
        fields = [
            "workspace", "name", "mapping", "endpoint_mode", "enabled", "source_kind", "source_config",
            "schedule_minutes", "schedule_cron",
        ]  # fmt: skip


class MappingAdminForm(forms.ModelForm):
    """Rules are checked as the mapping editor checks them (Mapping.prepare_rules: the version the page was opened
    at, the rules, the golden samples); a change in output must be accepted explicitly, and only the changes shown
    are accepted."""

    accept_changes = forms.BooleanField(
        required=False,
        label="Accept changed sample outputs",
        help_text="Save even when golden samples come out differently, recording the new outputs as expected.",
    )
    # The version the page was opened at, and which changes of the samples' outputs it showed.
    seen_version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    changes_digest = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Mapping
        fields = ["workspace", "name", "rules"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["seen_version"].initial = self.instance.version

    def accepted(self) -> bool | str:
        """What update_rules' accept_changes is: the digest of the changes shown, when they were accepted."""
        data = self.cleaned_data
        return (data.get("changes_digest") or "") if data.get("accept_changes") else False

    def clean(self):
        super().clean()
        data = self.cleaned_data
        rules = data.get("rules")
        if rules is None or self.errors:
            return data
        try:
            Mapping(pk=self.instance.pk).prepare_rules(
                rules, version=data.get("seen_version"), accept_changes=self.accepted()
            )
        except MappingConflict as e:
            self.add_error(None, str(e))
        except mapping_rules.MappingError as e:
            self.add_error("rules", e.errors)
        except OutputChanged as e:
            # Shown with the form: the next save accepts these changes (ticked), and no others.
            shown = cast(QueryDict, self.data).copy()  # the request's (the stubs say only Mapping)
            shown["changes_digest"] = e.digest
            self.data = shown
            self.add_error("rules", [*e.changes, "Tick 'Accept changed sample outputs' to save them."])
        return data


# ------------------------------------------------------------------------------------------------------ staff pages


class WorkspaceForm(forms.ModelForm):
    endpoint_url = forms.URLField(
        label="Endpoint URL", required=False, assume_scheme="https", help_text="Only for the sandbox pod."
    )

    class Meta:
        model = Workspace
        help_texts = {"embed_origins": EMBED_ORIGINS_HELP}
        widgets = {"embed_origins": forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})}
        fields = [
            "name",
            "pod",
            "endpoint_url",
            "environment",
            "rate_limit",
            "data_plan_id",
            "data_plan_version",
            "confirm_new_credentials",
        ]


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


class MappingForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        validators=[validate_one_line],
        help_text="Unique within the workspace; jobs pick a mapping by it.",
    )
    document = forms.CharField(
        label="Mapping document (JSON)",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "autocapitalize": "off"}),
    )
    version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    sample = forms.CharField(
        required=False,
        strip=False,
        max_length=MAX_SAMPLE_CHARS,
        label="Sample records: CSV with a header line, NDJSON (one JSON object per line), or JSON",
    )
    sample_format = forms.ChoiceField(required=False, choices=SampleFormat.choices, label="Read as")
    accept_changes = forms.BooleanField(required=False, label="Accept changed sample outputs")
    changes_digest = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, workspace, mapping: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.mapping = mapping

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = Mapping.objects.filter(workspace=self.workspace, name=name)
        if self.mapping is not None:
            others = others.exclude(pk=self.mapping.pk)
        if others.exists():
            raise forms.ValidationError(f"This workspace already has a mapping named {name!r}.")
        return name

    def clean_document(self) -> dict:
        try:
            doc = json.loads(self.cleaned_data["document"])
        except json.JSONDecodeError as e:
            raise forms.ValidationError(f"Not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}).") from None
        except RecursionError:
            raise forms.ValidationError("Not valid JSON: nested too deeply.") from None
        if not isinstance(doc, dict):
            raise forms.ValidationError("The mapping must be a JSON object ({...}).")
        return doc

    def clean_sample(self) -> str:
        return self.cleaned_data["sample"].replace("\r\n", "\n")  # (NUL characters are refused already)

    def clean_sample_format(self) -> str:
        return self.cleaned_data["sample_format"] or SampleFormat.AUTO


# ------------------------------------------------------------------------------------- the client's credential page


def pod_choices() -> list[tuple[str, str]]:
    """The pods a client may choose: mParticle's own. The sandbox pod and its endpoint URL are set by staff."""
    return [(value, label) for value, label in Workspace.Pod.choices if value != Workspace.Pod.SANDBOX]


class ConnectForm(forms.Form):
    """The Feed's key and secret, and the mParticle pod they work on. Never an endpoint URL: where the data goes is
    mParticle's pod, or what staff set up. Key and secret are never rendered back (see _fresh_inputs)."""

    pod = forms.ChoiceField(
        label="Pod",
        choices=pod_choices,
        help_text="Where your mParticle workspace is hosted. A Feed's key and secret use “Partner inbound (Feed)”.",
    )
    api_key = forms.CharField(
        label="API key",
        max_length=500,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "none", "spellcheck": "false"}),
    )
    api_secret = forms.CharField(
        label="API secret",
        max_length=500,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )

    def __init__(self, workspace: Workspace, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        if workspace.pod == Workspace.Pod.SANDBOX:
            del self.fields["pod"]  # staff pointed this workspace at a test endpoint: it stays there

    def probe(self) -> Workspace:
        """An unsaved copy of the workspace with the new credentials: what the connection test runs against."""
        data, workspace = self.cleaned_data, self.workspace
        return workspace.with_credentials(data.get("pod") or workspace.pod, data["api_key"], data["api_secret"])


class SentSearchForm(forms.Form):
    """The search of what was sent: a value as it was sent (an e-mail, a customer id, an mpid, any identity, a
    source_message_id or source_request_id), optionally in one workspace."""

    q = forms.CharField(
        label="Identity or id",
        max_length=500,
        required=False,
        strip=True,
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "placeholder": "e-mail, customer id, mpid, source_message_id…",
                "autocapitalize": "none",
                "spellcheck": "false",
            }
        ),
        help_text="Matched exactly as it was sent (case included; an e-mail address also in lower case).",
    )
    workspace = forms.ModelChoiceField(
        queryset=Workspace.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="Every workspace",
    )

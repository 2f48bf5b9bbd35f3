from __future__ import annotations

from django import forms

from feeds.models import Workspace


class WorkspaceAdminForm(forms.ModelForm):
    """Credentials are write-only: the inputs are always empty, and empty means "keep what is stored"."""

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
        fields = ["name", "slug", "pod", "endpoint_url", "environment", "status", "rate_limit"]

    def clean(self):
        data = super().clean()
        key, secret = data.get("new_api_key"), data.get("new_api_secret")
        if bool(key) != bool(secret):
            stored = self.instance.pk and self.instance.has_credentials
            if not stored:
                raise forms.ValidationError("Enter both the API key and the API secret.")
        return data

    def save(self, commit=True):
        workspace = super().save(commit=False)
        key, secret = self.cleaned_data.get("new_api_key"), self.cleaned_data.get("new_api_secret")
        if key or secret:
            workspace.set_credentials(key or workspace.api_key, secret or workspace.api_secret)
        elif commit:
            workspace.save()
        return workspace

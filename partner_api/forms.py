"""The form staff create a partner API token with (the admin's)."""

from __future__ import annotations

from django import forms
from django.utils import timezone

from partner_api.models import ApiToken


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple, help_text="What the token may do."
    )

    class Meta:
        model = ApiToken
        fields = ["name", "scopes", "workspaces", "expires_at"]

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future (or empty: until revoked).")
        return expires_at

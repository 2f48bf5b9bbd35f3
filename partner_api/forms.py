"""The form staff create a partner API token with (the admin's)."""

from __future__ import annotations

from django import forms

from partner_api.models import ApiToken


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple, help_text="What the token may do."
    )

    class Meta:
        model = ApiToken
        fields = ["name", "scopes", "workspaces", "expires_at"]

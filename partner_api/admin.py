"""Staff create partner API tokens here (the token is shown once, in the message after saving) and revoke them;
every call made with one is listed, read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from partner_api.forms import ApiTokenForm
from partner_api.models import ApiCall, ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["name", "prefix", "scopes", "state", "expires_at", "last_used_at", "created_by", "created_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    filter_horizontal = ["workspaces"]
    actions = ["revoke"]

    @admin.display(description="State")
    def state(self, obj: ApiToken) -> str:
        return obj.state

    def get_readonly_fields(self, request, obj=None):
        # A token's powers are chosen when it is made: to change them, issue another and revoke this one.
        if obj is not None:
            return [*self.readonly_fields, "name", "scopes", "workspaces", "expires_at"]
        return self.readonly_fields

    def save_model(self, request, obj: ApiToken, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        raw = obj.new_secret()
        obj.created_by = request.user
        obj.scopes = [s for s in ApiToken.Scope.values if s in form.cleaned_data["scopes"]]
        super().save_model(request, obj, form, change)
        messages.warning(
            request, f"The token is {raw} — copy it now: it is shown only once, and only its hash is kept."
        )

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin):
    list_display = ["at", "token", "method", "path", "status", "error_code", "address", "duration_ms"]
    list_filter = ["status", "method"]
    search_fields = ["path", "token__name", "token__prefix"]
    date_hierarchy = "at"
    list_select_related = ["token"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

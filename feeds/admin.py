from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from feeds import sync
from feeds.forms import WorkspaceAdminForm
from feeds.models import Delivery, Mapping, RejectedRecord, SyncJob, SyncRun, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    form = WorkspaceAdminForm
    list_display = ["name", "pod", "environment", "status", "credentials", "rate_limit", "updated_at"]
    list_filter = ["status", "pod", "environment"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["credentials", "status_message", "credentials_updated_at", "created_at"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "slug",
                    "pod",
                    "endpoint_url",
                    "environment",
                    "status",
                    "status_message",
                    "rate_limit",
                ]
            },
        ),
        ("Credentials", {"fields": ["credentials", "new_api_key", "new_api_secret", "credentials_updated_at"]}),
    ]

    @admin.display(description="Credentials")
    def credentials(self, obj: Workspace) -> str:
        # Only whether they are set: the stored values are never rendered.
        return "set" if obj.has_credentials else "not set"


@admin.register(Mapping)
class MappingAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "version", "updated_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "workspace__name"]
    readonly_fields = ["version", "created_at", "updated_at"]


@admin.register(SyncJob)
class SyncJobAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "source_kind", "source_path", "endpoint_mode", "enabled"]
    list_filter = ["workspace", "source_kind", "endpoint_mode", "enabled"]
    search_fields = ["name", "workspace__name", "source_path"]
    list_select_related = ["workspace"]
    actions = ["run_now"]

    @admin.action(description="Run sync now")
    def run_now(self, request, queryset):
        for job in queryset.select_related("workspace", "mapping"):
            try:
                run = sync.start_run(job, trigger=SyncRun.Trigger.MANUAL, user=request.user)
            except sync.SyncError as e:
                self.message_user(request, f"{job}: {e}", messages.ERROR)
                continue
            sync.enqueue_run(run)
            self.message_user(request, f"{job}: run #{run.pk} queued.", messages.SUCCESS)


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "workspace",
        "trigger",
        "status",
        "records_read",
        "records_rejected",
        "events_accepted",
        "throttled",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger", "workspace", "created_at"]
    search_fields = ["job__name", "workspace__name", "error"]
    list_select_related = ["job__workspace", "workspace"]
    date_hierarchy = "created_at"
    exclude = ["mapping_rules"]
    readonly_fields = ["deliveries_link", "rejects_link"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("job__workspace", "workspace")

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj: SyncRun):
        counts = dict(obj.deliveries.values_list("state").annotate(n=Count("id")).order_by())
        url = reverse("admin:feeds_delivery_changelist") + f"?run__id__exact={obj.pk}"
        text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
        return format_html('<a href="{}">{}</a>', url, text)

    @admin.display(description="Rejected records")
    def rejects_link(self, obj: SyncRun):
        url = reverse("admin:feeds_rejectedrecord_changelist") + f"?run__id__exact={obj.pk}"
        return format_html('<a href="{}">{} rejected</a>', url, obj.rejects.count())


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "workspace",
        "path",
        "state",
        "batch_count",
        "event_count",
        "attempts",
        "throttled_count",
        "seconds_waited",
        "last_status",
        "created_at",
    ]
    list_filter = ["state", "path", "workspace", "last_status"]
    search_fields = ["=run__id", "last_error"]
    list_select_related = ["workspace", "run"]
    exclude = ["payload"]


@admin.register(RejectedRecord)
class RejectedRecordAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["ref", "run", "stage", "reason", "created_at"]
    list_filter = ["stage", "run__workspace"]
    search_fields = ["ref", "reason", "=run__id"]
    # The run column shows "Run #n of <workspace> / <job>": load the job and workspace in the same query.
    list_select_related = ["run__job__workspace"]

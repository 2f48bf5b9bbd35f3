from __future__ import annotations

from datetime import timedelta

import orjson
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from feeds import actions, health, sync, webhooks
from feeds.actions import Done
from feeds.forms import MappingAdminForm, SyncJobAdminForm, WorkspaceAdminForm
from feeds.models import (
    AlertEvent,
    Delivery,
    DeliveryAttempt,
    Mapping,
    RejectedRecord,
    SyncJob,
    SyncRun,
    WebhookMessage,
    Workspace,
)
from feeds.notices import replay_message, verify_credentials
from feeds.views.access import REPLAY, may

# The request inspector shows at most this much of a pretty-printed body (bytes of UTF-8).
INSPECTOR_LIMIT = 200_000
# The attempts inline lists the newest attempts only: a delivery throttled for hours can have thousands.
ATTEMPTS_SHOWN = 200
REPLAY_WINDOW = timedelta(hours=24)


# ----------------------------------------------------------------------------------------------- workspaces


class WorkspaceChangeList(ChangeList):
    """The workspace list, with the health of the page's workspaces worked out at once (a few queries)."""

    def get_results(self, request):
        super().get_results(request)
        found = health.assess(self.result_list)
        for workspace in self.result_list:
            workspace.found_health = found[workspace.pk]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    form = WorkspaceAdminForm
    list_display = [
        "name", "pod", "environment", "status", "current_health", "credentials", "rate_limit", "learned_pace", "updated_at"
    ]  # fmt: skip
    list_filter = ["status", "pod", "environment"]
    list_select_related = ["pace"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = [
        "current_health", "status", "credentials", "pending", "status_message", "credentials_updated_at", "created_at",
        "learned_pace",
    ]  # fmt: skip
    actions = [
        "replay_last_day", "test_credentials", "pause", "resume", "confirm_credentials", "discard_credentials",
        "promote", "demote",
    ]  # fmt: skip
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
                    "current_health",
                    "rate_limit",
                    "learned_pace",
                    "data_plan_id",
                    "data_plan_version",
                ]
            },
        ),
        (
            "Credentials",
            {
                "fields": [
                    "credentials",
                    "new_api_key",
                    "new_api_secret",
                    "credentials_updated_at",
                    "confirm_new_credentials",
                    "pending",
                ]
            },
        ),
        (
            "Alerts (beside MPFEED_ALERT_EMAILS and MPFEED_ALERT_WEBHOOK_URL)",
            {
                "fields": [
                    "alert_emails",
                    "alert_webhook_url",
                    "new_alert_webhook_secret",
                    "clear_alert_webhook_secret",
                ]
            },
        ),
        ("Embedded credential form (beside MPFEED_EMBED_ORIGINS)", {"fields": ["embed_origins"]}),
    ]

    def get_changelist(self, request, **kwargs):
        return WorkspaceChangeList

    def get_readonly_fields(self, request, obj=None):
        # Once a workspace exists, its environment changes only through "Promote" and "Move back to
        # development", each after a confirmation (below, and on the staff pages).
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "environment"] if obj is not None else fields

    @admin.display(description="Health")
    def current_health(self, obj: Workspace) -> str:
        # The staff pages' and the alerts' rule (feeds.health): worked out for the whole list page at once.
        if obj.pk is None:
            return "not worked out before the workspace is saved"
        listed = getattr(obj, "found_health", None)
        found = listed or health.of(obj)
        reason = Truncator(found.reason).chars(120) if listed else found.reason
        return format_html('<strong class="health {}">{}</strong>: {}', found.state, found.state, reason)

    @admin.display(description="Learned pace")
    def learned_pace(self, obj: Workspace) -> str:
        pace = getattr(obj, "pace", None)
        return pace.summary if pace is not None else "nothing sent yet"

    @admin.display(description="Credentials")
    def credentials(self, obj: Workspace) -> str:
        # The pod and the key's last characters: the secret is never rendered.
        return f"{obj.get_pod_display()}, key {obj.api_key_hint}" if obj.has_credentials else "not set"

    @admin.display(description="Received, waiting for confirmation")
    def pending(self, obj: Workspace) -> str:
        if not obj.has_pending_credentials:
            return "none"
        when = timezone.localtime(obj.pending_received_at).strftime("%Y-%m-%d %H:%M")
        return f"{obj.get_pending_pod_display()}, key {obj.pending_key_hint}, tested {when}"

    def _tell(self, request, workspace: Workspace, done: Done, change_message: str = "") -> None:
        self.message_user(request, done.text, done.level)
        if done.changed and change_message:
            self.log_change(request, workspace, change_message)

    @admin.action(description="Use the credentials received (confirmation)", permissions=["change"])
    def confirm_credentials(self, request, queryset):
        for workspace in queryset:
            self._tell(
                request, workspace, actions.confirm_credentials(workspace), "Confirmed the credentials received."
            )

    @admin.action(description="Discard the credentials received", permissions=["change"])
    def discard_credentials(self, request, queryset):
        for workspace in queryset:
            self._tell(
                request, workspace, actions.discard_credentials(workspace), "Discarded the credentials received."
            )

    def _confirmed(self, request, queryset, action: str, title: str, lines, button: str):
        """None once staff confirmed (the intermediate page's POST), else that page: what will happen, to
        which workspaces, as Django's "delete selected" asks."""
        if request.POST.get("confirmed") == "yes":
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "lines": lines,
            "button": button,
            "action": action,
            "workspaces": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/feeds/workspace/confirm_action.html", context)

    @admin.action(description="Promote to production…", permissions=["change"])
    def promote(self, request, queryset):
        page = self._confirmed(
            request, queryset, "promote", "Promote to production?", actions.PROMOTE_WARNING, "Promote to production"
        )
        if page is not None:
            return page
        for workspace in queryset:
            self._tell(request, workspace, actions.promote(workspace), "Promoted to production.")
        return None

    @admin.action(description="Move back to development…", permissions=["change"])
    def demote(self, request, queryset):
        page = self._confirmed(
            request, queryset, "demote", "Move back to development?", actions.DEMOTE_WARNING, "Move back to development"
        )
        if page is not None:
            return page
        for workspace in queryset:
            self._tell(request, workspace, actions.demote(workspace), "Moved back to development.")
        return None

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("new_api_key") or form.cleaned_data.get("new_api_secret"):
            # New credentials were stored by the form: test them now, and resume what they blocked.
            level, text = verify_credentials(obj)
            self.message_user(request, text, level)

    @admin.action(description="Replay failed deliveries of the last 24 hours", permissions=["replay"])
    def replay_last_day(self, request, queryset):
        since = timezone.now() - REPLAY_WINDOW
        for workspace in queryset:
            count, queued = sync.replay_workspace(workspace, since)
            level, text = replay_message(count, queued, nothing="no delivery failed in the last 24 hours.")
            self.message_user(request, f"{workspace}: {text}", level)

    @admin.action(description="Test credentials and resume blocked runs", permissions=["change"])
    def test_credentials(self, request, queryset):
        for workspace in queryset:
            level, text = verify_credentials(workspace)
            self.message_user(request, f"{workspace}: {text}", level)

    @admin.action(description="Pause", permissions=["change"])
    def pause(self, request, queryset):
        for workspace in queryset:
            self._tell(request, workspace, actions.pause(workspace, request.user), "Paused.")

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        for workspace in queryset:
            self._tell(request, workspace, actions.resume(workspace), "Resumed.")

    def has_replay_permission(self, request) -> bool:
        return may(request, REPLAY)


@admin.register(Mapping)
class MappingAdmin(admin.ModelAdmin):
    form = MappingAdminForm
    list_display = ["name", "workspace", "version", "updated_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "workspace__name"]
    readonly_fields = ["version", "warnings_list", "created_at", "updated_at"]
    fields = [
        "workspace", "name", "rules", "accept_changes", "seen_version", "changes_digest", "version", "warnings_list",
        "created_at", "updated_at",
    ]  # fmt: skip

    @admin.display(description="Warnings")
    def warnings_list(self, obj: Mapping) -> str:
        from feeds.mapping import warnings

        found = warnings(obj.rules) if obj.rules else []
        return "; ".join(found) or "none"

    def save_model(self, request, obj, form, change):
        # The form checked them (the row stays locked until the page's transaction ends): stored the editor's way.
        obj.update_rules(
            form.cleaned_data["rules"], version=form.cleaned_data.get("seen_version"), accept_changes=form.accepted()
        )


@admin.register(SyncJob)
class SyncJobAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "source_kind", "endpoint_mode", "schedule", "enabled"]
    list_filter = ["workspace", "source_kind", "endpoint_mode", "enabled"]
    # source_config is searched as text: file paths, table names, API hosts.
    search_fields = ["name", "workspace__name", "source_config"]
    form = SyncJobAdminForm
    readonly_fields = ["cursor", "inbox_url", "secret_state"]
    list_select_related = ["workspace"]
    actions = ["run_now", "new_inbox_token"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "mapping", "endpoint_mode", "enabled"]}),
        (
            "Source",
            {
                "fields": [
                    "source_kind",
                    "source_config",
                    "secret_state",
                    "new_source_secret",
                    "clear_source_secret",
                    "cursor",
                    "inbox_url",
                ]
            },
        ),
        ("Schedule", {"fields": ["schedule_minutes", "schedule_cron"]}),
    ]

    @admin.display(description="Schedule")
    def schedule(self, obj: SyncJob) -> str:
        if obj.schedule_cron:
            return f"cron {obj.schedule_cron}"
        if obj.schedule_minutes:
            return f"every {obj.schedule_minutes} min"
        return "—"

    @admin.display(description="Authorization header")
    def secret_state(self, obj: SyncJob) -> str:
        return "set" if obj.source_secret else "not set"

    @admin.display(description="Push inbox URL")
    def inbox_url(self, obj: SyncJob) -> str:
        if obj.source_kind != SyncJob.SourceKind.INBOX or not obj.pk:
            return "—"
        path = reverse("feeds:inbox", args=[obj.inbox_id])
        token = "token set" if obj.inbox_token_hash else "no token yet: use the action 'Generate a new inbox token'"
        return f"POST {path} with 'Authorization: Bearer <token>' ({token})"

    @admin.action(description="Generate a new inbox token (shown once)", permissions=["change"])
    def new_inbox_token(self, request, queryset):
        for job in queryset.filter(source_kind=SyncJob.SourceKind.INBOX):
            token = job.new_inbox_token()
            path = request.build_absolute_uri(reverse("feeds:inbox", args=[job.inbox_id]))
            self.message_user(
                request,
                f"{job}: new inbox token {token} — copy it now, it is not shown again. Push to {path}",
                messages.WARNING,
            )

    @admin.action(description="Run sync now", permissions=["change"])
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


# ----------------------------------------------------------------------------------------------------- runs


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "workspace",
        "trigger",
        "status",
        "note",
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
    readonly_fields = ["situation", "deliveries_link", "rejects_link"]
    actions = ["replay_failed", "cancel_runs"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "situation",
                    "status",
                    "failed_before_at",
                    "failed_before_error",
                    "cancelled_by",
                    "resume_at",
                    "job",
                    "workspace",
                    "trigger",
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "deliveries_link",
                    "rejects_link",
                ]
            },
        ),
        (
            "Counters",
            {
                "fields": [
                    "records_read",
                    "records_rejected",
                    "batches",
                    "requests",
                    "events",
                    "events_accepted",
                    "batches_rejected",
                    "throttled",
                    "retries",
                    "seconds_waited",
                    "names_truncated",
                ]
            },
        ),
        (
            "What the run reads",
            {
                "fields": [
                    "source_kind",
                    "source_config",
                    "source_notes",
                    "cursor_before",
                    "cursor",
                    "endpoint_mode",
                    "environment",
                    "mapping_version",
                ]
            },
        ),
        (
            "Progress",
            {
                "classes": ["collapse"],
                "fields": [
                    "source_done",
                    "building",
                    "set_aside_records",
                    "windows",
                    "read_done",
                    "chunks",
                    "lease_until",
                    "queued_at",
                    "error",
                ],
            },
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("job__workspace", "workspace")

    @admin.display(description="Note")
    def note(self, obj: SyncRun) -> str:
        return Truncator(obj.error).chars(100)

    @admin.display(description="Where it stands")
    def situation(self, obj: SyncRun):
        # The run's error or waiting text, on top of the page where it cannot be missed.
        if obj.status in SyncRun.STOPPED_STATUSES:
            return format_html(
                '<p class="errornote">{}: {}</p>', obj.get_status_display(), obj.error or "no reason recorded"
            )
        if obj.status == SyncRun.Status.WAITING:
            return format_html("<strong>{}</strong>", obj.error or f"Waiting until {obj.resume_at}")
        return obj.error or obj.get_status_display()

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

    @admin.action(description="Replay failed deliveries of selected runs", permissions=["replay"])
    def replay_failed(self, request, queryset):
        count, queued = 0, []
        for run in queryset:
            replayed, runs = sync.replay_run(run)
            count += replayed
            queued += runs
        level, text = replay_message(count, queued, nothing="the selected run(s) have no failed deliveries.")
        self.message_user(request, text, level)

    def has_replay_permission(self, request) -> bool:
        return may(request, REPLAY)

    @admin.action(description="Cancel selected runs (nothing not yet sent is sent)", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        for run in queryset.select_related("job"):
            done = actions.cancel_run(run, request.user)
            self.message_user(request, done.text, done.level)

    def has_cancel_permission(self, request) -> bool:
        # The run pages' rule (feeds:run_cancel), though the admin's run pages are read-only.
        return may(request, "change_syncrun")


# ----------------------------------------------------------------------------------------------- deliveries


# What the delivery page shows of each attempt (all read-only).
ATTEMPT_FIELDS = ("time", "outcome", "status", "latency", "retry_after_", "rate_limit_used_", "scope", "waited_", "message")  # fmt: skip


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    verbose_name_plural = f"Attempts (the newest {ATTEMPTS_SHOWN} at most)"
    fields = readonly_fields = ATTEMPT_FIELDS
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is None:
            return qs
        try:
            delivery_id = int(match.kwargs["object_id"])
        except (KeyError, TypeError, ValueError):
            return qs
        newest = DeliveryAttempt.objects.filter(delivery_id=delivery_id).order_by("-id").values_list("id", flat=True)
        oldest_shown = list(newest[ATTEMPTS_SHOWN - 1 : ATTEMPTS_SHOWN])
        return qs.filter(id__gte=oldest_shown[0]) if oldest_shown else qs

    @admin.display(description="Time")
    def time(self, obj: DeliveryAttempt) -> str:
        # To the millisecond: attempts of one delivery are often less than a second apart.
        at = timezone.localtime(obj.at)
        return f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d} {at:%Z}"

    @admin.display(description="Latency (ms)")
    def latency(self, obj: DeliveryAttempt):
        return obj.latency_ms

    @admin.display(description="Retry-After (s)")
    def retry_after_(self, obj: DeliveryAttempt):
        return "" if obj.retry_after is None else f"{obj.retry_after:g}"

    @admin.display(description="Rate limit used (%)")
    def rate_limit_used_(self, obj: DeliveryAttempt):
        return "" if obj.rate_limit_used is None else obj.rate_limit_used

    @admin.display(description="Scope")
    def scope(self, obj: DeliveryAttempt):
        return obj.rate_limit_scope

    @admin.display(description="Waited (s)")
    def waited_(self, obj: DeliveryAttempt):
        return f"{obj.waited:.3f}" if obj.waited else ""


RELEASED: dict[str, str] = {
    Delivery.State.ACCEPTED: "accepted",
    Delivery.State.PARTIAL: "accepted (some batches were refused)",
    Delivery.State.REJECTED: "refused by mParticle",
    Delivery.State.SPLIT: "split into smaller requests",
}


def pretty_json(raw: bytes) -> bytes:
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2)
    except orjson.JSONDecodeError:
        return raw


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
    readonly_fields = ["request_inspector"]
    inlines = [DeliveryAttemptInline]
    actions = ["replay_selected"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "run",
                    "workspace",
                    "parent",
                    "sequence",
                    "state",
                    "attempts",
                    "throttled_count",
                    "seconds_waited",
                    "last_status",
                    "last_error",
                    "first_failure_at",
                    "created_at",
                    "sent_at",
                    "finished_at",
                ]
            },
        ),
        (
            "Content",
            {
                "fields": [
                    "path",
                    "payload_bytes",
                    "batch_count",
                    "event_count",
                    "source_request_ids",
                    "record_refs",
                    "batch_events",
                ]
            },
        ),
        ("Request inspector", {"fields": ["request_inspector"]}),
    ]

    @admin.display(description="Request and last answer")
    def request_inspector(self, obj: Delivery):
        # The body holds batches only: the credentials travel in the Authorization header, never stored here.
        request = format_html(
            "<p><strong>POST {}</strong> — {} bytes, {} batch(es), {} event(s). "
            "Authorization: HTTP Basic with the workspace's API key and secret (not stored with the request, "
            "never shown).</p>",
            obj.path,
            obj.payload_bytes,
            obj.batch_count,
            obj.event_count,
        )
        if obj.payload is None:
            verb = RELEASED.get(obj.state)
            body = format_html(
                "<p>The body was released after it was {} (bodies are kept {} day(s) after their answer).</p>",
                verb or "settled",
                f"{settings.MPFEED_BODY_RETENTION_DAYS:g}",
            )
        else:
            pretty = pretty_json(obj.body())
            note = ""
            if len(pretty) > INSPECTOR_LIMIT:
                note = format_html(
                    "<p>The pretty-printed body is {}: only its first {} are shown.</p>",
                    filesizeformat(len(pretty)),
                    filesizeformat(INSPECTOR_LIMIT),
                )
                pretty = pretty[:INSPECTOR_LIMIT]
            body = format_html(
                '{}<pre class="request-body">{}</pre>',
                note,
                pretty.decode("utf-8", "ignore"),
            )
        return format_html("{}{}{}", request, body, self._last_answer(obj))

    def _last_answer(self, obj: Delivery):
        if not obj.attempts:
            return format_html("<p><strong>Last answer:</strong> {}</p>", "not sent yet.")
        status = f"HTTP {obj.last_status}" if obj.last_status is not None else "no HTTP answer"
        detail = f" — {obj.last_error}" if obj.last_error else ""
        excerpt = ""
        if obj.response_excerpt:
            pretty = pretty_json(obj.response_excerpt.encode()).decode("utf-8", "ignore")
            excerpt = format_html('<pre class="response-excerpt">{}</pre>', pretty)
        return format_html("<p><strong>Last answer:</strong> {}{}</p>{}", status, detail, excerpt)

    @admin.action(description="Replay selected failed deliveries", permissions=["replay"])
    def replay_selected(self, request, queryset):
        selected = queryset.count()
        count, queued = sync.replay(queryset)
        level, text = replay_message(
            count,
            queued,
            nothing=f"none of the {selected} selected deliveries has failed (only failed ones are sent again).",
        )
        if count and count < selected:
            text += f" The other {selected - count} selected delivery(ies) had not failed and were left as they are."
        self.message_user(request, text, level)

    def has_replay_permission(self, request) -> bool:
        return may(request, REPLAY)


@admin.register(RejectedRecord)
class RejectedRecordAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["ref", "run", "stage", "reason", "created_at"]
    list_filter = ["stage", "run__workspace"]
    search_fields = ["ref", "reason", "=run__id"]
    # The run column shows "Run #n of <workspace> / <job>": load the job and workspace in the same query.
    list_select_related = ["run__job__workspace"]


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "workspace", "kind", "email_result", "webhook_result"]
    list_filter = ["kind", "workspace"]
    search_fields = ["workspace__name", "message"]
    list_select_related = ["workspace"]


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Every alert and event for each webhook, with its tries: what a receiver missed, and sending it again."""

    list_display = ["created_at", "workspace", "event", "target", "state", "attempts", "next_attempt_at", "last_result"]
    list_filter = ["state", "target", "event", "workspace"]
    search_fields = ["workspace__name", "event", "=id"]
    list_select_related = ["workspace"]
    actions = ["send_again"]

    @admin.action(description="Send again now", permissions=["send"])
    def send_again(self, request, queryset):
        tried = webhooks.send_again(queryset)
        sent = queryset.filter(state=WebhookMessage.State.SENT).count()
        self.message_user(request, f"Tried {tried} message(s) again; {sent} of the selected are now sent.")

    def has_send_permission(self, request) -> bool:
        # Staff who may change workspaces (where the webhooks are set) may send their messages again.
        return request.user.has_perm("feeds.change_workspace")

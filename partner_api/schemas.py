"""What the partner API answers about each object: plain JSON, never a key's secret nor a job's Authorization
header (both write-only), nor a delivery's payload."""

from __future__ import annotations

from datetime import datetime

from django.urls import reverse

from feeds.health import WorkspaceHealth
from feeds.models import CredentialLink, Delivery, Mapping, RejectedRecord, SyncJob, SyncRun, Workspace
from partner_api.models import utc


def when(value: datetime | None) -> str | None:
    return utc(value) if value is not None else None


def workspace(ws: Workspace, health: WorkspaceHealth | None = None) -> dict:
    body = {
        "slug": ws.slug,
        "name": ws.name,
        "pod": ws.pod,
        "endpoint_url": ws.endpoint_url,
        "environment": ws.environment,
        "status": ws.status,
        "status_message": ws.status_message,
        "confirm_new_credentials": ws.confirm_new_credentials,
        "credentials": {
            "stored": ws.has_credentials,
            "key_hint": ws.api_key_hint,
            "updated_at": when(ws.credentials_updated_at),
            "verified_at": when(ws.credentials_verified_at),
            "pending_confirmation": ws.has_pending_credentials,
            "pending_key_hint": ws.pending_key_hint,
        },
        "created_at": when(ws.created_at),
    }
    if health is not None:
        body["health"] = {
            "state": health.state,
            "level": health.level,
            "reason": health.reason,
            "run": health.run_id,
            "credentials": health.credentials.label,
        }
    return body


def link(item: CredentialLink) -> dict:
    return {
        "id": item.pk,
        "state": item.state,
        "created_at": when(item.created_at),
        "expires_at": when(item.expires_at),
        "used_at": when(item.used_at),
        "revoked_at": when(item.revoked_at),
        "attempts": item.attempts,
    }


def mapping(item: Mapping, *, rules: bool = True) -> dict:
    body = {"name": item.name, "version": item.version, "updated_at": when(item.updated_at)}
    if rules:
        body["rules"] = item.rules
    return body


def job(item: SyncJob) -> dict:
    body = {
        "id": item.pk,
        "name": item.name,
        "mapping": item.mapping.name,
        "source_kind": item.source_kind,
        "source_config": item.source_config,
        "source_secret_set": bool(item.source_secret),
        "endpoint_mode": item.endpoint_mode,
        "enabled": item.enabled,
        "schedule_minutes": item.schedule_minutes,
        "schedule_cron": item.schedule_cron,
        "created_at": when(item.created_at),
    }
    if item.source_kind == SyncJob.SourceKind.INBOX:
        body["records_url"] = reverse(
            "partner_api:job_records", kwargs={"slug": item.workspace.slug, "job_id": item.pk}
        )
    return body


def run(item: SyncRun) -> dict:
    return {
        "id": item.pk,
        "workspace": item.workspace.slug,
        "job": item.job_id,
        "trigger": item.trigger,
        "status": item.status,
        "error": item.error,
        "environment": item.environment,
        "mapping_version": item.mapping_version,
        "counters": {k: v for k, v in item.summary().items() if k not in ("run", "status", "error")},
        "created_at": when(item.created_at),
        "started_at": when(item.started_at),
        "finished_at": when(item.finished_at),
    }


def delivery(item: Delivery) -> dict:
    return {
        "sequence": item.sequence,
        "path": item.path,
        "state": item.state,
        "batches": item.batch_count,
        "events": item.event_count,
        "bytes": item.payload_bytes,
        "attempts": item.attempts,
        "throttled": item.throttled_count,
        "last_status": item.last_status,
        "last_error": item.last_error,
        "sent_at": when(item.sent_at),
        "finished_at": when(item.finished_at),
    }


def reject(item: RejectedRecord) -> dict:
    return {
        "id": item.pk,
        "stage": item.stage,
        "ref": item.ref,
        "reason": item.reason,
        "excerpt": item.excerpt,
        "created_at": when(item.created_at),
    }

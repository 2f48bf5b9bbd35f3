"""The partner API's tokens and its audit trail. A token is shown once and only its hash is kept (as a credential
link's, feeds.models.token_hash); each has scopes, may expire, may be limited to some workspaces, and is revoked
rather than deleted, so that the calls made with it stay attributed."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.db.models import QuerySet
from django.utils import timezone

from feeds.models import AddressAttempt, Workspace, token_hash, validate_one_line

PREFIX = "mpf_"


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read: workspaces, mappings, jobs, runs"
        ONBOARD = "onboard", "Onboard: create workspaces, set credentials, load mappings, create jobs"
        SYNC = "sync", "Sync: push records, run jobs"

    name = models.CharField(
        max_length=200, validators=[validate_one_line], help_text="Whose token this is, e.g. the partner platform."
    )
    prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters, to tell it.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="What the token may do: read, onboard, sync.")
    workspaces = models.ManyToManyField(
        Workspace,
        blank=True,
        related_name="api_tokens",
        help_text="Only these workspaces (none: every workspace). A limited token cannot create workspaces.",
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until revoked.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls,
        name: str,
        scopes: list[str],
        *,
        user=None,
        expires_at: datetime | None = None,
        workspaces: list[Workspace] | QuerySet[Workspace] | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token; returns it and its secret value (shown once: only its hash is kept)."""
        unknown = set(scopes) - set(cls.Scope.values)
        if unknown or not scopes:
            raise ValueError(f"unknown or no scopes: {sorted(unknown)}")
        token = cls(
            name=name,
            scopes=[s for s in cls.Scope.values if s in scopes],
            expires_at=expires_at,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        raw = token.new_secret()
        token.full_clean(exclude=["token_hash", "prefix"])
        token.save()
        if workspaces:
            token.workspaces.set(workspaces)
        return token, raw

    def new_secret(self) -> str:
        """Give this (unsaved) token its secret value: returned to show once; only the hash and prefix stay."""
        raw = PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.token_hash = raw[:12], token_hash(raw)
        return raw

    @classmethod
    def find(cls, raw: str) -> ApiToken | None:
        if not raw or not raw.startswith(PREFIX) or len(raw) > 100:
            return None
        token = cls.objects.filter(token_hash=token_hash(raw)).first()
        # The lookup is by hash; compare again in constant time all the same.
        return token if token is not None and hmac.compare_digest(token.token_hash, token_hash(raw)) else None

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def limited(self) -> bool:
        return self.workspaces.exists()

    def reachable(self) -> QuerySet[Workspace]:
        """The workspaces this token may see and act on."""
        return self.workspaces.all() if self.limited else Workspace.objects.all()

    def revoke(self) -> None:
        ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.refresh_from_db(fields=["revoked_at"])

    def count_call(self) -> float | None:
        """Count one call in this minute's window (MPFEED_API_RATE_PER_MINUTE per token): None when it may go
        on, else the seconds until the window ends (the Retry-After)."""
        if AddressAttempt.allow("api-token", str(self.pk), settings.MPFEED_API_RATE_PER_MINUTE, 60):
            return None
        now = timezone.now().timestamp()
        return 60 - now % 60

    def mark_used(self) -> None:
        now = timezone.now()
        ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now


class ApiCall(models.Model):
    """One call of the partner API, for the audit trail: who (the token), what (method, path), the answer. Never
    a body: bodies may hold a client's key and secret."""

    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=50, blank=True)
    address = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]
        # The admin's trail of one token, newest first.
        indexes = [models.Index(fields=["token", "-at"], name="apicall_token_recent")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} → {self.status}"


def utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

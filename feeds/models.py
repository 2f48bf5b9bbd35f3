"""mpfeed's domain: client workspaces, their mappings and sync jobs, runs, deliveries and rejects."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
import uuid
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator, validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from fernet_fields import EncryptedTextField

from feeds import db
from feeds import mapping as mapping_rules
from feeds.mparticle import schema
from feeds.mparticle.client import EventsClient, base_url_for
from feeds.mparticle.endpoints import non_public_reason
from feeds.security import embed_origins, parent_origin, parse_origins
from feeds.sources import SourceError
from feeds.sources import registry as source_registry


def validate_one_line(value: str) -> None:
    """Names go into e-mail subjects, Markdown headings, CSV files and log lines: one line of printable text."""
    # Formatting characters include bidirectional overrides (text shown in another order than it is stored);
    # the zero-width (non-)joiners some scripts and emoji need stay allowed.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in "\u200c\u200d" for c in value):
        raise ValidationError("A name cannot hold line breaks, tabs or other control or formatting characters.")
    if value != value.strip():
        raise ValidationError("A name cannot start or end with spaces.")


def token_hash(token: str) -> str:
    """What is kept of a secret token (a credential link's, a job's push inbox's): its SHA-256, in hex. The token
    itself is shown once and never stored; a token given later is checked by hashing it the same way."""
    return hashlib.sha256(token.encode()).hexdigest()


class Workspace(models.Model):
    """One client's mParticle destination, reached through the Events API with the client's Feed credentials."""

    class Pod(models.TextChoices):
        PARTNER = "partner", "Partner inbound (Feed)"
        US1 = "us1", "US1"
        US2 = "us2", "US2"
        EU1 = "eu1", "EU1"
        AU1 = "au1", "AU1"
        SANDBOX = "sandbox", "Sandbox / custom URL (testing only)"

    class Environment(models.TextChoices):
        DEVELOPMENT = "development", "Development"
        PRODUCTION = "production", "Production"

    class Status(models.TextChoices):
        AWAITING_CREDENTIALS = "awaiting_credentials", "Awaiting credentials"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CREDENTIALS_REJECTED = "credentials_rejected", "Credentials rejected"

    name = models.CharField(
        max_length=200, unique=True, validators=[validate_one_line], help_text="The client's name, as staff know it."
    )
    slug = models.SlugField(max_length=200, unique=True)
    pod = models.CharField(
        max_length=20,
        choices=Pod.choices,
        default=Pod.PARTNER,
        help_text="Where the client's workspace lives. Feed keys use the partner inbound host.",
    )
    endpoint_url = models.URLField(
        blank=True, help_text="Only for the sandbox pod: the Events API base URL, ending in /v2."
    )
    environment = models.CharField(max_length=20, choices=Environment.choices, default=Environment.DEVELOPMENT)
    # Write-only: never rendered, logged or exported. Encrypted with FERNET_KEYS (newest first).
    api_key = EncryptedTextField(blank=True, default="")
    api_secret = EncryptedTextField(blank=True, default="")
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.AWAITING_CREDENTIALS)
    status_message = models.TextField(blank=True, help_text="Why the workspace is in its status, for people.")
    rate_limit = models.FloatField(
        default=schema.DEFAULT_BATCHES_PER_SECOND,
        help_text="Batches per second this workspace may receive (mParticle's default is 270).",
    )
    data_plan_id = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[
            RegexValidator(
                r"\A[a-z0-9][a-z0-9_-]{0,99}\Z",
                "A data plan id as mParticle shows it: lowercase letters, digits, _ and - (e.g. web_plan).",
            )
        ],
        help_text="The client's mParticle data plan, sent as context.data_plan in every batch (a mapping may "
        "name its own). Empty: no data plan.",
    )
    data_plan_version = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="The data plan's version; empty for the plan's active version.",
    )
    credentials_updated_at = models.DateTimeField(null=True, blank=True)
    credentials_verified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the stored credentials last passed a connection test."
    )
    confirm_new_credentials = models.BooleanField(
        default=False,
        help_text="Credentials a client hands over through a link wait for a staff member's confirmation before "
        "they are used (the ones in use stay until then).",
    )
    # Received through a link, tested, waiting for staff (confirm_new_credentials). Write-only, encrypted.
    pending_pod = models.CharField(max_length=20, choices=Pod.choices, blank=True, default="")
    pending_api_key = EncryptedTextField(blank=True, default="")
    pending_api_secret = EncryptedTextField(blank=True, default="")
    pending_received_at = models.DateTimeField(null=True, blank=True)
    # Alerts for this workspace go to these as well as to the global MPFEED_ALERT_EMAILS / _WEBHOOK_URL.
    alert_emails = models.TextField(
        blank=True,
        default="",
        help_text="Who else gets this workspace's alert e-mails: addresses separated by commas or lines, beside "
        "MPFEED_ALERT_EMAILS.",
    )
    alert_webhook_url = models.URLField(
        max_length=500,
        blank=True,
        default="",
        help_text="A webhook for this workspace's alerts, beside MPFEED_ALERT_WEBHOOK_URL: a public https address.",
    )
    # The partner pages that may frame this workspace's embeddable credential form, beside MPFEED_EMBED_ORIGINS.
    embed_origins = models.TextField(
        blank=True,
        default="",
        help_text="Partner pages that may frame this workspace's embedded credential form, beside "
        "MPFEED_EMBED_ORIGINS: origins (scheme://host[:port], no path), separated by commas or lines.",
    )
    # Write-only (never rendered): the HMAC key of this workspace's webhook. Encrypted with FERNET_KEYS.
    alert_webhook_secret = EncryptedTextField(blank=True, default="")
    # What alerts last said about this workspace (feeds.alerts): one alert per change, never one per run.
    health = models.CharField(max_length=30, default="ok", editable=False)
    health_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # Written only by feeds.alerts (conditional updates), never by a full save of a possibly stale instance.
    ALERT_FIELDS = ("health", "health_changed_at")

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:200] or "workspace"
        if self.pk and not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in self.ALERT_FIELDS
            ]
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.pod == self.Pod.SANDBOX:
            if not settings.MPFEED_ALLOW_SANDBOX:
                raise ValidationError(
                    {"pod": "The sandbox pod is not allowed on this deployment (MPFEED_ALLOW_SANDBOX)."}
                )
            if not self.endpoint_url:
                raise ValidationError({"endpoint_url": "The sandbox pod needs an endpoint URL."})
            reason = self.endpoint_refusal()
            if reason:
                raise ValidationError({"endpoint_url": reason})
        elif self.endpoint_url:
            raise ValidationError({"endpoint_url": "An endpoint URL is only used with the sandbox pod."})
        try:
            _ = self.alert_email_list
        except ValidationError as e:
            raise ValidationError({"alert_emails": e.messages}) from None
        reason = self.webhook_refusal()
        if reason:
            raise ValidationError({"alert_webhook_url": reason})
        origins, bad = parse_origins(self.embed_origins or "")
        if bad:
            shown = ", ".join(b[:100] for b in bad[:5])
            raise ValidationError({"embed_origins": f"Not an origin (scheme://host[:port], no path): {shown}."})
        self.embed_origins = "\n".join(origins)

    @property
    def allowed_embed_origins(self) -> list[str]:
        """Who may frame this workspace's embeddable credential form: MPFEED_EMBED_ORIGINS, then the workspace's
        own embed origins (what is not an origin is left out; the forms refuse it)."""
        return embed_origins(parse_origins(self.embed_origins or "")[0])

    def embed_origin(self, asked: str) -> str | None:
        """The origin this workspace's embedded form is opened for (feeds.security.parent_origin over
        allowed_embed_origins): the one asked when allowed, the only one allowed, "" for any, None when refused."""
        return parent_origin(asked, self.allowed_embed_origins)

    @property
    def alert_email_list(self) -> list[str]:
        """This workspace's own alert recipients (raises ValidationError naming an address that is not one)."""
        addresses = [a.strip() for a in re.split(r"[,;\s]+", self.alert_emails or "") if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"{address[:100]} is not an e-mail address.") from None
        return list(dict.fromkeys(addresses))

    def webhook_refusal(self) -> str | None:
        """Why this workspace's alert webhook may not be called (None: it may, or there is none): as for the
        endpoints, loopback, private and link-local hosts only where MPFEED_ALLOW_PRIVATE_ENDPOINTS allows them."""
        if not self.alert_webhook_url or settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS:
            return None
        reason = non_public_reason(self.alert_webhook_url)
        if not reason:
            return None
        reason = reason.replace("the endpoint URL", "the webhook URL")
        return f"{reason[:1].upper()}{reason[1:]} (MPFEED_ALLOW_PRIVATE_ENDPOINTS is off)."

    @property
    def data_plan(self) -> dict | None:
        """The workspace's data plan setting, as a mapping's "data_plan" says it; None without one."""
        if not self.data_plan_id:
            return None
        plan: dict = {"plan_id": self.data_plan_id}
        if self.data_plan_version is not None:
            plan["plan_version"] = self.data_plan_version
        return plan

    def endpoint_refusal(self) -> str | None:
        """Why this workspace's custom endpoint may not be sent to (None: it may, or it is an mParticle pod):
        loopback, private and link-local hosts only where MPFEED_ALLOW_PRIVATE_ENDPOINTS allows them."""
        if self.pod != self.Pod.SANDBOX or settings.MPFEED_ALLOW_PRIVATE_ENDPOINTS:
            return None
        reason = non_public_reason(self.endpoint_url)
        return f"{reason[:1].upper()}{reason[1:]} (MPFEED_ALLOW_PRIVATE_ENDPOINTS is off)." if reason else None

    @property
    def api_key_hint(self) -> str:
        return key_hint(self.api_key)

    @property
    def pending_key_hint(self) -> str:
        return key_hint(self.pending_api_key)

    @property
    def has_pending_credentials(self) -> bool:
        return self.pending_received_at is not None

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key and self.api_secret)

    @property
    def base_url(self) -> str:
        return base_url_for(self.pod, self.endpoint_url or None)

    def client(self) -> EventsClient:
        if not self.has_credentials:
            raise ValueError(f"workspace {self.name} has no credentials")
        if self.pod == self.Pod.SANDBOX and not settings.MPFEED_ALLOW_SANDBOX:
            raise ValueError("the sandbox pod is not allowed on this deployment (MPFEED_ALLOW_SANDBOX)")
        reason = self.endpoint_refusal()  # resolved again: a name may point elsewhere since it was saved
        if reason:
            raise ValueError(reason)
        return EventsClient(
            self.base_url,
            self.api_key,
            self.api_secret,
            connect_timeout=settings.MPFEED_CONNECT_TIMEOUT,
            read_timeout=settings.MPFEED_READ_TIMEOUT,
        )

    def set_credentials(self, api_key: str, api_secret: str) -> None:
        """Store new credentials; a workspace that was waiting for its first ones becomes active. One whose
        credentials were rejected stays so until new ones pass a connection test (sync.verify_and_resume)."""
        self.api_key = api_key.strip()
        self.api_secret = api_secret.strip()
        self.credentials_updated_at = timezone.now()
        self.credentials_verified_at = None
        if self.status == self.Status.AWAITING_CREDENTIALS:
            self.status = self.Status.ACTIVE
            self.status_message = ""
        self.save()

    def mark_credentials_verified(self, tested: datetime | None = None) -> bool:
        """The stored credentials just passed a connection test: verified now, and active again if they had been
        rejected (a workspace staff paused meanwhile stays paused: the status changes only from "rejected").

        `tested` is the `credentials_updated_at` of the credentials that were tested: when they have been
        replaced since (during the test), nothing is marked and False is returned."""
        now = timezone.now()
        mine = Workspace.objects.filter(pk=self.pk)
        if tested is not None:
            mine = mine.filter(credentials_updated_at=tested)
        with transaction.atomic():
            marked = mine.update(credentials_verified_at=now, updated_at=now)
            if marked:
                mine.filter(status=self.Status.CREDENTIALS_REJECTED).update(
                    status=self.Status.ACTIVE, status_message=""
                )
        self.refresh_from_db(fields=["status", "status_message", "credentials_verified_at", "updated_at"])
        return bool(marked)

    def mark_credentials_rejected(self, message: str, tested: datetime | None = None) -> bool:
        """The credentials were refused. `tested`: the `credentials_updated_at` of those that were sent — when they
        have been replaced since, nothing is marked and False is returned. A paused workspace stays paused."""
        mine = Workspace.objects.filter(pk=self.pk)
        if tested is not None:
            mine = mine.filter(credentials_updated_at=tested)
        now = timezone.now()
        marked = mine.exclude(status=self.Status.PAUSED).update(
            status=self.Status.CREDENTIALS_REJECTED, status_message=message, updated_at=now
        )
        if not marked and mine.exists():
            return True  # paused: the run is blocked all the same, the workspace stays paused
        self.refresh_from_db(fields=["status", "status_message", "updated_at"])
        return bool(marked)

    @property
    def can_send(self) -> bool:
        return self.status == self.Status.ACTIVE and self.has_credentials

    def hold_credentials(self, pod: str, api_key: str, api_secret: str, tested: datetime) -> None:
        """Credentials that passed a connection test at `tested`, kept aside until staff confirm them
        (confirm_new_credentials); the ones in use are untouched."""
        self.pending_pod, self.pending_api_key, self.pending_api_secret = pod, api_key.strip(), api_secret.strip()
        self.pending_received_at = tested
        self.save(update_fields=["pending_pod", "pending_api_key", "pending_api_secret", "pending_received_at"])

    def use_received_credentials(self, pod: str, api_key: str, api_secret: str, tested: datetime) -> None:
        """Credentials that passed a connection test at `tested` replace the stored ones, verified then."""
        self.pod = pod
        if pod != self.Pod.SANDBOX:
            self.endpoint_url = ""
        self.set_credentials(api_key, api_secret)
        updated = Workspace.objects.filter(pk=self.pk)
        updated.update(credentials_verified_at=tested)
        updated.filter(status=self.Status.CREDENTIALS_REJECTED).update(status=self.Status.ACTIVE, status_message="")
        self.refresh_from_db(fields=["status", "status_message", "credentials_verified_at"])

    def receive_tested_credentials(self, pod: str, api_key: str, api_secret: str, tested: datetime) -> None:
        """Credentials handed over from outside (a credential link, the partner API) that passed a connection test
        at `tested`: used at once, or held for staff when the workspace asks for confirmation. The caller holds
        the row locked (select_for_update)."""
        if self.confirm_new_credentials:
            self.hold_credentials(pod, api_key, api_secret, tested)
        else:
            self.use_received_credentials(pod, api_key, api_secret, tested)

    def with_credentials(self, pod: str, api_key: str, api_secret: str) -> Workspace:
        """An unsaved copy of this workspace with other credentials (and pod): what a connection test of new
        credentials runs against before anything is stored. A sandbox endpoint stays only on the sandbox pod."""
        return Workspace(
            pk=self.pk,
            name=self.name,
            environment=self.environment,
            pod=pod,
            endpoint_url=self.endpoint_url if pod == self.Pod.SANDBOX else "",
            api_key=api_key,
            api_secret=api_secret,
        )

    def confirm_pending_credentials(self) -> bool:
        """Staff confirm the credentials held aside: they are used from now on. False when there were none."""
        with transaction.atomic():
            mine = Workspace.objects.select_for_update().get(pk=self.pk)
            tested = mine.pending_received_at
            if tested is None:  # none held aside (has_pending_credentials)
                return False
            pod, key, secret = mine.pending_pod, mine.pending_api_key, mine.pending_api_secret
            mine.discard_pending_credentials()
            mine.use_received_credentials(pod, key, secret, tested)
        self.refresh_from_db()
        return True

    def discard_pending_credentials(self) -> None:
        self.pending_pod, self.pending_api_key, self.pending_api_secret, self.pending_received_at = "", "", "", None
        self.save(update_fields=["pending_pod", "pending_api_key", "pending_api_secret", "pending_received_at"])

    def pause(self, by: str) -> bool:
        """Staff stop sending to this workspace: no new run starts, and unfinished runs stop (blocked) when a
        worker or sender next looks at them. `by` names who paused it, in the status message. False when it was
        paused already (left as it is)."""
        now = timezone.now()
        changed = (
            Workspace.objects.filter(pk=self.pk)
            .exclude(status=self.Status.PAUSED)
            .update(
                status=self.Status.PAUSED,
                status_message=f"Paused by {by} on {timezone.localtime(now):%Y-%m-%d %H:%M %Z}.",
                updated_at=now,
            )
        )
        self.refresh_from_db(fields=["status", "status_message", "updated_at"])
        return bool(changed)

    def resume(self) -> bool:
        """Staff let a paused workspace send again: active, or awaiting credentials when it has none. False when
        it was not paused (left as it is, also when someone else resumed it meanwhile). The runs the pause blocked
        go on once the credentials pass a test (feeds.actions.resume tests them)."""
        status = self.Status.ACTIVE if self.has_credentials else self.Status.AWAITING_CREDENTIALS
        changed = Workspace.objects.filter(pk=self.pk, status=self.Status.PAUSED).update(
            status=status, status_message="", updated_at=timezone.now()
        )
        self.refresh_from_db()
        return bool(changed)

    def promotion_refusal(self) -> str | None:
        """Why this workspace may not go from development to production yet (None: it may): staff promote it
        once a run succeeded, that is once they could check what the client's development environment got."""
        if not self.pk or not self.runs.succeeded().exists():
            return "Promote after at least one successful run in development."
        return None

    def promote(self) -> bool:
        """Development → production (see promotion_refusal, raised as a ValidationError). False when the
        workspace is in production already."""
        if self.environment == self.Environment.PRODUCTION:
            return False
        refusal = self.promotion_refusal()
        if refusal:
            raise ValidationError(refusal)
        Workspace.objects.filter(pk=self.pk).update(environment=self.Environment.PRODUCTION, updated_at=timezone.now())
        self.refresh_from_db(fields=["environment", "updated_at"])
        return True

    def demote(self) -> bool:
        """Production → development: the way back from a promotion (runs that start from now on send to the
        client's development environment; batches already built keep the environment they were built with).
        False when the workspace is in development already."""
        changed = Workspace.objects.filter(pk=self.pk, environment=self.Environment.PRODUCTION).update(
            environment=self.Environment.DEVELOPMENT, updated_at=timezone.now()
        )
        self.refresh_from_db(fields=["environment", "updated_at"])
        return bool(changed)


def key_hint(api_key: str) -> str:
    """What staff see of a key: its last four characters (never the secret), to compare with the client's."""
    return f"…{api_key[-4:]}" if len(api_key) >= 12 else ("…" if api_key else "")


class SampleFormat(models.TextChoices):
    AUTO = "auto", "Detect"
    CSV = "csv", "CSV"
    NDJSON = "ndjson", "NDJSON"
    JSON = "json", "JSON"


MAX_SAMPLE_CHARS = 512 * 1024


class Mapping(models.Model):
    """Versioned rules from a partner record to identities, user attributes and events (see the README)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="mappings")
    name = models.CharField(max_length=200, default="default", validators=[validate_one_line])
    version = models.PositiveIntegerField(default=1, help_text="Goes up by one with every change of the rules.")
    rules = models.JSONField(help_text="The mapping document (JSON).")
    sample = models.TextField(
        blank=True,
        default="",
        max_length=MAX_SAMPLE_CHARS,
        help_text="Records pasted or uploaded in the editor (CSV, NDJSON or JSON), kept to map and preview from.",
    )
    sample_format = models.CharField(max_length=10, choices=SampleFormat.choices, default=SampleFormat.AUTO)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace__name", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="mapping_unique_name_per_workspace")]

    def __str__(self) -> str:
        return f"{self.workspace} / {self.name} v{self.version}"

    def clean(self) -> None:
        errors = mapping_rules.validate(self.rules)
        if errors:
            raise ValidationError({"rules": errors})

    def update_rules(self, doc: dict, *, version: int | None = None, accept_changes: bool | str = False) -> bool:
        """The one way a mapping is saved (the editor, the admin, load_mapping, the demo): `doc` becomes its
        rules, stored with the name and workspace set on this instance; the version goes up when the rules
        changed. Checked as prepare_rules checks them, against the stored row, locked until it is written.
        Returns whether anything was stored. Raises MappingConflict when another mapping of the workspace has
        this name (the form's check lost a race)."""
        try:
            with transaction.atomic():
                stored, rules = self._checked_rules(doc, version, accept_changes)
                if stored is None:
                    self.rules, self.version = rules, 1
                    self.save()
                    return True
                renamed = (self.name, self.workspace_id) != (stored.name, stored.workspace_id)
                self.version = stored.version + (1 if rules is not None else 0)
                self.rules = stored.rules if rules is None else rules
                if rules is None and not renamed:
                    return False
                self.save(update_fields=["name", "workspace", "rules", "version", "updated_at"])
                return True
        except IntegrityError:
            raise MappingConflict(f"This workspace already has a mapping named {self.name!r}.") from None

    def keep_sample(self, text: str, fmt: str) -> bool:
        """Keep `text` (read as `fmt`) as the sample staff map from; the rules and version are untouched.
        Returns whether it changed."""
        if (text, fmt) == (self.sample, self.sample_format):
            return False
        self.sample, self.sample_format = text, fmt
        self.save(update_fields=["sample", "sample_format", "updated_at"])
        return True

    def prepare_rules(self, doc: dict, *, version: int | None = None, accept_changes: bool | str = False):
        """What update_rules would store as the rules: `doc`, with the golden samples' new outputs recorded as
        their expectations when the changes are accepted; None when it equals the stored rules. Locks the
        stored row for the rest of the caller's transaction (the admin checks in its form, then saves).

        Raises MappingConflict when `version` (the one the editor was opened at; None: not checked) is no longer
        the stored one, MappingError when the rules are not valid, and OutputChanged when the golden samples
        (the document's own, and the stored mapping's run through the new rules) come out differently — unless
        `accept_changes`: True accepts whatever changes, a digest (OutputChanged.digest) only the changes staff
        were shown."""
        return self._checked_rules(doc, version, accept_changes)[1]

    def _checked_rules(self, doc, version, accept_changes) -> tuple[Mapping | None, dict | None]:
        with transaction.atomic():
            stored = Mapping.objects.select_for_update().filter(pk=self.pk).first() if self.pk else None
        if stored is not None and version is not None and version != stored.version:
            raise MappingConflict(
                f"Someone saved this mapping since you opened it (now version {stored.version}). "
                f"Copy your JSON, reload the page and apply your changes again."
            )
        errors = mapping_rules.validate(doc)
        if errors:
            raise mapping_rules.MappingError(errors)
        before = stored.rules if stored is not None else None
        if stored is not None and doc == before:
            return stored, None
        problems = [f"{r.label}: " + "; ".join(r.differences) for r in mapping_rules.check_samples(doc) if not r.ok]
        if before:
            problems += [str(change) for change in mapping_rules.compare_outputs(before, doc)]
        if not problems:
            return stored, doc
        accepted = accept_changes is True or (bool(accept_changes) and accept_changes == changes_digest(problems))
        if not accepted:
            raise OutputChanged(problems)
        return stored, with_current_outputs(doc)


class MappingConflict(ValueError):
    """A mapping cannot be saved as asked: someone saved it meanwhile, or another one has its name."""


class OutputChanged(ValueError):
    """A mapping edit changes what its golden samples produce; `changes` says how, one line each."""

    def __init__(self, changes: list[str]):
        self.changes = changes
        super().__init__("; ".join(changes))

    @property
    def digest(self) -> str:
        """What accepting exactly these changes is posted as (update_rules' accept_changes)."""
        return changes_digest(self.changes)


def changes_digest(changes: list[str]) -> str:
    """Which changes staff were shown, so that "accept" accepts those and not others made since."""
    return hashlib.sha256("\n".join(changes).encode()).hexdigest()


def with_current_outputs(doc: dict) -> dict:
    """The document with each sample's expectation replaced by what its rules produce now."""
    results = mapping_rules.check_samples(doc)
    samples = []
    for sample, result in zip(doc.get("samples", []), results):
        expect = {"rejected": result.rejected} if result.rejected is not None else result.output
        samples.append({**sample, "expect": expect})
    return {**doc, "samples": samples} if samples else doc


class SyncJob(models.Model):
    """What to send where: a source, read through a mapping, delivered to a workspace — now or on a schedule."""

    # Declared with the source kinds (feeds/sources/registry.py): SourceKind.FILE, .SQL, .HTTP, .INBOX.
    # django-stubs type the functional API's members as names only, not (name, (value, label)) pairs.
    SourceKind = models.TextChoices("SourceKind", source_registry.choices())  # type: ignore[call-overload]

    class EndpointMode(models.TextChoices):
        AUTO = "auto", "Auto (historical for data older than 30 days)"
        REALTIME = "realtime", "Real-time (/bulkevents)"
        HISTORICAL = "historical", "Historical (/bulkevents/historical)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200, validators=[validate_one_line])
    mapping = models.ForeignKey(Mapping, on_delete=models.PROTECT, related_name="jobs")
    source_kind = models.CharField(max_length=20, choices=SourceKind.choices, default=SourceKind.FILE)
    source_config = models.JSONField(
        default=dict, blank=True, help_text="The source's settings (see the README, Sources), as JSON."
    )
    # Write-only, like the workspace credentials: the Authorization header value for an HTTP source.
    source_secret = EncryptedTextField(blank=True, default="")
    endpoint_mode = models.CharField(max_length=20, choices=EndpointMode.choices, default=EndpointMode.REALTIME)
    enabled = models.BooleanField(default=True, help_text="Scheduled runs happen only while enabled.")
    schedule_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Run every this many minutes (or give a cron expression)."
    )
    schedule_cron = models.CharField(max_length=100, blank=True, help_text="e.g. '*/15 * * * *' (UTC).")
    # Where the next run starts reading: the last position of the last finished run (incremental sources).
    cursor = models.JSONField(null=True, blank=True)
    # Scheduled runs of an incremental source that found nothing new are not kept as runs: they are counted here
    # (since the last run that found something) — "checked N times, nothing new, last at T" (feeds.sync).
    nothing_new_checks = models.PositiveIntegerField(default=0, editable=False)
    nothing_new_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Push inbox: the URL id and the hash of the secret token (the token itself is shown once).
    inbox_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    inbox_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    # The source kind as loaded or last saved, which set_source compares with (not a field).
    _stored_source_kind: str | None

    class Meta:
        ordering = ["workspace__name", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="job_unique_name_per_workspace")]

    def __str__(self) -> str:
        return f"{self.workspace} / {self.name}"

    def save(self, *args, **kwargs):
        default = source_registry.default_schedule_minutes(self.source_kind)  # the inbox's: every minute
        if default and not (self.schedule_minutes or self.schedule_cron):
            self.schedule_minutes = default
        super().save(*args, **kwargs)
        self._stored_source_kind = self.source_kind

    @classmethod
    def from_db(cls, db, field_names, values):
        job = super().from_db(db, field_names, values)
        job._stored_source_kind = job.__dict__.get("source_kind")  # what set_source compares with
        return job

    def refresh_from_db(
        self,
        using: str | None = None,
        fields: Iterable[str] | None = None,
        from_queryset: QuerySet[SyncJob] | None = None,
    ) -> None:
        super().refresh_from_db(using, fields, from_queryset)
        if fields is None or "source_kind" in fields:
            self._stored_source_kind = self.source_kind

    def set_source(self, kind: str, config: dict, *, secret: str | None = None) -> None:
        """The one way a job's source changes, from the job page, the admin or a command (not saved here):
        checked by `check_source`; `secret` replaces the Authorization header ("" removes it, None keeps it).
        A reading position in one kind of source means nothing in another: when the kind changes, the next run
        reads the new source from its beginning."""
        self.check_source(kind, config, secret=secret)
        if self.pk and kind != getattr(self, "_stored_source_kind", kind):
            self.cursor = None
        self.source_kind, self.source_config = kind, config
        if secret is not None:
            self.source_secret = secret

    def check_source(self, kind: str, config: dict, *, secret: str | None = None) -> None:
        """Whether this job may read `kind` with `config` (and send `secret`): the settings are checked as a run
        would use them (feeds/sources/registry.py: file paths inside MPFEED_SOURCE_ROOT, known databases,
        allowed hosts …), never with the stored secret. ValidationError (for people) on "source_config" or
        "source_secret"."""
        errors = {}
        try:
            source_registry.check_settings(kind, config, job_id=self.pk)
        except SourceError as e:
            errors["source_config"] = f"{str(e)[:1].upper()}{str(e)[1:]}."
        if secret and not source_registry.takes_secret(kind):
            takes = " and ".join(k.value.upper() for k in source_registry.KINDS if k.takes_secret)
            errors["source_secret"] = f"Only {takes} sources send an Authorization header."
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        if self.mapping_id and self.workspace_id and self.mapping.workspace_id != self.workspace_id:
            raise ValidationError({"mapping": "The mapping belongs to another workspace."})
        if self.schedule_minutes is not None and self.schedule_cron:
            raise ValidationError({"schedule_cron": "Give either an interval in minutes or a cron expression."})
        if self.schedule_cron:
            from croniter import croniter

            if not croniter.is_valid(self.schedule_cron):
                raise ValidationError({"schedule_cron": f"{self.schedule_cron!r} is not a valid cron expression."})

    @property
    def is_scheduled(self) -> bool:
        return bool(self.schedule_minutes or self.schedule_cron)

    @property
    def source_is_remote(self) -> bool:
        """Reading the source asks a partner's system (a query, an API call), declared with its kind."""
        return source_registry.source_kind(self.source_kind).remote

    def count_nothing_new(self, when: datetime | None = None) -> None:
        """A scheduled look found nothing new: one more check on the job's count, not a run (feeds.sync)."""
        when = when or timezone.now()
        SyncJob.objects.filter(pk=self.pk).update(nothing_new_checks=F("nothing_new_checks") + 1, nothing_new_at=when)

    def new_inbox_token(self) -> str:
        """A new secret token for the push inbox; only its hash is kept. Returns it to show once."""
        token = secrets.token_urlsafe(32)
        self.inbox_token_hash = token_hash(token)
        self.save(update_fields=["inbox_token_hash"])
        return token

    def inbox_token_matches(self, token: str) -> bool:
        if not self.inbox_token_hash or not token:
            return False
        return hmac.compare_digest(self.inbox_token_hash, token_hash(token))


class InboxRecord(models.Model):
    """A record pushed to a job's inbox, stored before the push is answered; the next run forwards it."""

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="inbox")
    # The record as JSON text (escaped, so any JSON a partner sends can be stored, "\u0000" included).
    data = models.TextField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        # The inbox source reads a job's records after a cursor id, in order.
        indexes = [models.Index(fields=["job", "id"], name="inbox_job_id")]

    def __str__(self) -> str:
        return f"Inbox record {self.pk} of {self.job}"


class InboxPush(models.Model):
    """A push that came with an Idempotency-Key: the same key again (a retry after a lost answer) is answered as
    the first time and stores nothing; the same key with another body is refused. Kept MPFEED_IDEMPOTENCY_HOURS."""

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="pushes")
    key = models.CharField(max_length=255)
    body_sha256 = models.CharField(max_length=64)
    received = models.PositiveIntegerField()
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "key"], name="inbox_push_unique_key")]
        indexes = [models.Index(fields=["created_at"], name="inbox_push_created")]

    def __str__(self) -> str:
        return f"Push {self.key!r} to {self.job}"


class AddressAttempt(models.Model):
    """How many times an address tried something limited (a credential-link test) in a window of time."""

    scope = models.CharField(max_length=30)
    address = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "address", "window_start"], name="address_attempt_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scope} from {self.address}: {self.count}"

    @classmethod
    def allow(cls, scope: str, address: str, limit: int, window_seconds: float) -> bool:
        """Count one attempt of `address` in the current window; False once it has had `limit` of them."""
        return cls.take(scope, address, limit, window_seconds) is not None

    @classmethod
    def release(cls, scope: str, address: str, window_start: datetime) -> None:
        """Give back one attempt counted by `take` in the window it returned (one that turned out not to count)."""
        cls.objects.filter(scope=scope, address=address, window_start=window_start, count__gt=0).update(
            count=F("count") - 1
        )

    @classmethod
    def take(cls, scope: str, address: str, limit: int, window_seconds: float) -> datetime | None:
        """`allow`, answering the window the attempt was counted in (None: not counted, over the limit)."""
        now = timezone.now()
        start = datetime.fromtimestamp(now.timestamp() // window_seconds * window_seconds, tz=UTC)
        with transaction.atomic():
            row, created = cls.objects.select_for_update().get_or_create(
                scope=scope, address=address, window_start=start
            )
            if created:  # a new window: forget the old ones
                cls.objects.filter(scope=scope, window_start__lt=start - timedelta(days=1)).delete()
            if row.count >= limit:
                return None
            cls.objects.filter(pk=row.pk).update(count=F("count") + 1)
        return start


class SetAsideRecord(models.Model):
    """A converted record waiting to be sent with the other records of its user (feeds.reading): written with
    the checkpoint that read it, deleted in the transaction that builds it into a delivery."""

    run = models.ForeignKey("SyncRun", on_delete=models.CASCADE, related_name="set_aside")
    path = models.CharField(max_length=60)
    user = models.CharField(
        max_length=200,
        help_text="The user's key: its identities (and mpid) as canonical JSON, or a hash of them when long.",
    )
    seq = models.PositiveBigIntegerField(help_text="The record's place in the source.")
    ref = models.CharField(max_length=300)
    data = models.BinaryField(help_text="The converted record, as feeds.mparticle.batch.set_aside_form writes it.")
    events = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["run", "path", "user", "seq"], name="set_aside_order")]

    def __str__(self) -> str:
        return f"Set-aside record {self.ref} of run {self.run_id}"


class SyncRunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=SyncRun.ACTIVE_STATUSES)

    def succeeded(self):
        """Runs that ended well: everything sent, some records perhaps rejected."""
        return self.filter(status__in=SyncRun.SUCCEEDED_STATUSES)


class SyncRun(models.Model):
    """One execution of a job: counters, checkpoint and outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"
        SUCCEEDED = "succeeded", "Succeeded"
        SUCCEEDED_WITH_REJECTS = "succeeded_with_rejects", "Succeeded with rejected records"
        BLOCKED = "blocked", "Blocked (credentials)"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Staff"
        CLI = "cli", "Command line"
        SCHEDULE = "schedule", "Schedule"
        API = "api", "Partner API"

    # Not finished: at most one such run per job (syncrun_one_active_per_job).
    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING, Status.WAITING, Status.BLOCKED)
    # Being worked on: read, sent, or waiting to be sent again.
    WORKING_STATUSES = (Status.QUEUED, Status.RUNNING, Status.WAITING)
    # Taken up by a worker and not ended: being read or sent, or waiting to be sent again.
    STARTED_STATUSES = (Status.RUNNING, Status.WAITING)
    SUCCEEDED_STATUSES = (Status.SUCCEEDED, Status.SUCCEEDED_WITH_REJECTS)
    FINISHED_STATUSES = (*SUCCEEDED_STATUSES, Status.FAILED)
    # Stopped short of success, with an error a person should read.
    STOPPED_STATUSES = (Status.FAILED, Status.BLOCKED)
    # Ended by staff (SyncRun.cancel): never worked on again, its pending deliveries kept but never sent. Not one
    # of FINISHED_STATUSES, whose runs the sweeper reopens when they hold pending deliveries (replays).
    ENDED_STATUSES = (*FINISHED_STATUSES, Status.CANCELLED)

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="runs")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, help_text="Why the run failed or is blocked, for people.")
    # What the run reads, fixed when it starts so that a resumed run reads the same thing.
    source_kind = models.CharField(max_length=20, choices=SyncJob.SourceKind.choices)
    source_config = models.JSONField(default=dict)
    endpoint_mode = models.CharField(max_length=20, choices=SyncJob.EndpointMode.choices)
    environment = models.CharField(max_length=20, choices=Workspace.Environment.choices)
    mapping_version = models.PositiveIntegerField()
    mapping_rules = models.JSONField()
    # Checkpoint: where reading resumes (the position of the last item turned into deliveries/rejects); how many
    # items (records and unreadable lines) were consumed is records_read.
    cursor_before = models.JSONField(null=True, blank=True, help_text="Where this run started reading.")
    cursor = models.JSONField(null=True, blank=True, help_text="Where this run resumes reading.")
    source_notes = models.JSONField(
        default=list,
        blank=True,
        help_text="What the source chose for what it read: each file's format, encoding and delimiter, and how "
        "(detected or named).",
    )
    # Nothing left to turn into deliveries: the source is read to the end and nothing is set aside.
    read_done = models.BooleanField(default=False)
    # Records are set aside per user (SetAsideRecord) while the source is read, then built into deliveries, each
    # user's records together: the source read to the end, whether set-aside records are being built, how many
    # are set aside (records, bytes), and how many windows of them were built (a window: what was set aside
    # before building, at most MPFEED_GROUP_WINDOW_RECORDS / _BYTES).
    source_done = models.BooleanField(default=False)
    building = models.BooleanField(default=False)
    set_aside_records = models.PositiveBigIntegerField(default=0)
    set_aside_bytes = models.PositiveBigIntegerField(default=0)
    windows = models.PositiveIntegerField(default=0)
    # The highest delivery sequence number given out (the reader's chunks and the senders' splits both take
    # numbers, so they are handed out by the database: see allocate_sequences).
    sequences = models.PositiveIntegerField(default=0)
    # Why reading stopped early (the source failed); the run ends failed with it once what was read is sent.
    read_error = models.TextField(blank=True)
    chunks = models.PositiveIntegerField(default=0)
    # Reading: a worker holds it until lease_until; a crashed worker's reading is claimed again after it.
    lease_until = models.DateTimeField(null=True, blank=True)
    # Sending: a sender (feeds.dispatch) holds the run's deliveries until send_lease_until, renewing it as it
    # goes; a crashed sender's run is taken over by another after it.
    sender = models.ForeignKey("Sender", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    send_lease_until = models.DateTimeField(null=True, blank=True)
    # When a sender last gave the run back (runs waiting for a sender are taken oldest first).
    send_released_at = models.DateTimeField(null=True, blank=True)
    # A waiting run (throttled, or backing off after failures) may go on from this time.
    resume_at = models.DateTimeField(null=True, blank=True)
    # When the run was last handed to the task queue (the sweeper re-queues a task that got lost).
    queued_at = models.DateTimeField(null=True, blank=True)
    # Counters, updated per chunk and per request.
    records_read = models.PositiveBigIntegerField(default=0)
    records_rejected = models.PositiveBigIntegerField(default=0)
    batches = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0, help_text="Deliveries (HTTP requests) written.")
    events = models.PositiveBigIntegerField(default=0, help_text="Events written into deliveries.")
    events_accepted = models.PositiveBigIntegerField(default=0)
    batches_rejected = models.PositiveBigIntegerField(default=0, help_text="Batches mParticle refused.")
    throttled = models.PositiveIntegerField(default=0, help_text="429 answers.")
    retries = models.PositiveIntegerField(default=0, help_text="Requests sent again after a failure.")
    seconds_waited = models.FloatField(default=0)
    names_truncated = models.PositiveIntegerField(default=0, help_text="Names over 256 characters, cut.")
    values_truncated = models.PositiveIntegerField(default=0, help_text="Values over 4,096 characters, cut.")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    reopened_from = models.CharField(
        max_length=30,
        blank=True,
        help_text="The status a finished or blocked run had when it was put back to work (a replay, new "
        "credentials), until it finishes again.",
    )
    # A failed run put back to work (a replay) keeps the record that it failed, and why, after it recovers.
    failed_before_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run last ended failed before it was replayed."
    )
    failed_before_error = models.TextField(blank=True, help_text="Why it had failed then.")
    cancelled_by = models.CharField(max_length=150, blank=True, help_text="Who cancelled the run.")

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one unfinished run per job, enforced by the database (start_run relies on it). The values of
            # ACTIVE_STATUSES, which Meta cannot see (tests/test_shared_helpers.py checks that they agree).
            models.UniqueConstraint(
                fields=["job"],
                condition=Q(status__in=["queued", "running", "waiting", "blocked"]),
                name="syncrun_one_active_per_job",
            )
        ]
        indexes = [
            # Staff history: a workspace's runs, newest first.
            models.Index(fields=["workspace", "-created_at"], name="syncrun_workspace_recent"),
            # Senders looking for runs to send: the active ones by status.
            models.Index(fields=["status", "send_lease_until"], name="syncrun_sendable"),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} of {self.job}"

    def get_absolute_url(self) -> str:
        return reverse("admin:feeds_syncrun_change", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def summary(self) -> dict:
        return {
            "run": self.pk,
            "status": self.status,
            "error": self.error,
            "records_read": self.records_read,
            "records_rejected": self.records_rejected,
            "batches": self.batches,
            "requests": self.requests,
            "events": self.events,
            "events_accepted": self.events_accepted,
            "batches_rejected": self.batches_rejected,
            "throttled": self.throttled,
            "retries": self.retries,
            "seconds_waited": round(self.seconds_waited, 3),
        }

    def add(self, *, refresh: bool = True, **counters: float) -> None:
        """Add to counters in the database (F expressions), and refresh them here unless told not to."""
        changes = {k: F(k) + v for k, v in counters.items() if v}
        if changes:
            SyncRun.objects.filter(pk=self.pk).update(**changes)
        if refresh:
            self.refresh_from_db(fields=list(counters))

    @property
    def events_per_batch(self) -> float:
        """How many events a batch carried on average: the fewer batches per event, the sooner a run is sent
        (mParticle's limit counts batches)."""
        return round(self.events / self.batches, 1) if self.batches else 0.0

    def allocate_sequences(self, count: int) -> int:
        """Reserve `count` delivery sequence numbers; returns the first. Call inside the transaction that writes
        the deliveries (the row stays locked until it commits)."""
        if count <= 0:
            return 0
        # Deliveries written by other means (older versions, tests) count too.
        highest = Delivery.objects.filter(run=OuterRef("pk")).order_by("-sequence").values("sequence")[:1]
        SyncRun.objects.filter(pk=self.pk).update(
            sequences=Greatest(F("sequences"), Coalesce(Subquery(highest), Value(0))) + count
        )
        last = SyncRun.objects.filter(pk=self.pk).values_list("sequences", flat=True).get()
        return last - count + 1

    def claim(self, lease: timedelta) -> bool:
        """Take the whole run — reading and sending — for this process (feeds.sync.process_run): queued, waiting
        and due, or running under leases that ran out."""
        now = timezone.now()
        free = (Q(send_lease_until__isnull=True) | Q(send_lease_until__lt=now)) & (
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        )
        claimable = (
            Q(status=self.Status.QUEUED)
            | Q(status=self.Status.WAITING, resume_at__lte=now)
            | Q(status=self.Status.RUNNING)
        )
        changed = SyncRun.objects.filter(claimable, free, pk=self.pk).update(
            status=self.Status.RUNNING,
            lease_until=now + lease,
            send_lease_until=now + lease,
            sender=None,
            started_at=self.started_at or now,
            resume_at=None,
            error="",
        )
        if changed == 1:
            self.refresh_from_db()
        return changed == 1

    def claim_reading(self, lease: timedelta) -> bool:
        """Take the run's reading for this worker, while senders send what is read (feeds.sync.read_run). A queued
        run starts running; a running or waiting one keeps its status (senders own it)."""
        now = timezone.now()
        queued = Q(status=self.Status.QUEUED)
        changed = (
            SyncRun.objects.filter(pk=self.pk, status__in=self.WORKING_STATUSES)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .update(
                status=Case(
                    When(queued, then=Value(self.Status.RUNNING)), default=F("status"), output_field=models.CharField()
                ),
                error=Case(When(queued, then=Value("")), default=F("error"), output_field=models.TextField()),
                lease_until=now + lease,
                started_at=Coalesce(F("started_at"), Value(now)),
            )
        )
        if changed == 1:
            self.refresh_from_db()
        return changed == 1

    def release_reading(self) -> None:
        self.lease_until = None
        SyncRun.objects.filter(pk=self.pk).update(lease_until=None)

    def extend_lease(self, lease: timedelta, *, sending: bool = False) -> None:
        self.lease_until = timezone.now() + lease
        fields = {"lease_until": self.lease_until}
        if sending:
            fields["send_lease_until"] = self.send_lease_until = self.lease_until
        SyncRun.objects.filter(pk=self.pk).update(**fields)

    def finish(self, status: str, error: str = "") -> bool:
        """End the run (finished, failed or blocked), unless it ended meanwhile: False then."""
        finished = status in self.FINISHED_STATUSES
        now = timezone.now()
        # The reading lease stays: a reader in the middle of a chunk keeps it until it sees the run stopped (and
        # releases it), so that no second reader starts beside it.
        fields = {
            "status": status,
            "error": error,
            "finished_at": now if finished else None,
            "resume_at": None,
            "send_lease_until": None,
            "sender": None,
        }
        if finished:
            fields["reopened_from"] = ""
        changed = SyncRun.objects.filter(pk=self.pk, status__in=self.WORKING_STATUSES).update(**fields)
        if changed and finished:
            # Records set aside and never built (the run failed before): a new run reads them again.
            SetAsideRecord.objects.filter(run=self).delete()
        if changed:
            for name, value in fields.items():
                setattr(self, name, value)
        else:
            self.refresh_from_db()
        return bool(changed)

    def wait_until(self, when, reason: str, *, reading: bool = False, sender: Sender | None = None) -> bool:
        """Stop sending until `when` (a sender takes the run again then); `reading`: the reading stops too.
        `sender`: only while that sender holds the run (one that lost it has nothing to say about it)."""
        fields = {
            "status": self.Status.WAITING,
            "resume_at": when,
            "error": f"{reason} until {timezone.localtime(when):%Y-%m-%d %H:%M:%S %Z}",
            "send_lease_until": None,
            "sender": None,
            "send_released_at": timezone.now(),
        }
        if reading:
            fields["lease_until"] = None
        mine = SyncRun.objects.filter(pk=self.pk, status__in=self.WORKING_STATUSES)
        if sender is not None:
            mine = mine.filter(sender=sender)
        changed = mine.update(**fields)
        if changed:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)

    def cancel(self, by: str) -> bool:
        """End the run for good, whatever it was doing (queued, running, waiting or blocked): nothing not yet sent is
        sent — its pending deliveries are kept, never sent — and readers and senders stop at their next step, as
        they do for a paused workspace (they look at the run's status). False when the run had ended already."""
        now = timezone.now()
        fields = {
            "status": self.Status.CANCELLED,
            "error": f"Cancelled by {by} at {timezone.localtime(now):%Y-%m-%d %H:%M:%S %Z}; the deliveries not "
            "sent are kept and not sent.",
            "cancelled_by": by,
            "finished_at": now,
            "resume_at": None,
            "send_lease_until": None,
            "sender": None,
            "reopened_from": "",
        }
        # The reading lease stays, as in finish(): a reader in the middle of a chunk sees the run stopped.
        with transaction.atomic():
            changed = SyncRun.objects.filter(pk=self.pk, status__in=self.ACTIVE_STATUSES).update(**fields)
            if changed:
                SetAsideRecord.objects.filter(run=self).delete()  # never built now
        if changed:
            for name, value in fields.items():
                setattr(self, name, value)
        else:
            self.refresh_from_db()
        return bool(changed)

    def requeue(self) -> None:
        """Give the worker back with work left (the end of a time slice of process_run)."""
        self.status = self.Status.QUEUED
        self.lease_until = self.send_lease_until = None
        SyncRun.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            status=self.Status.QUEUED, lease_until=None, send_lease_until=None, sender=None
        )


class DeliveryQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(state=Delivery.State.PENDING)

    def to_send(self):
        """Pending and still to be sent: not those a cancelled run keeps (SyncRun.cancel)."""
        return self.pending().exclude(run__status=SyncRun.Status.CANCELLED)

    def failed(self):
        return self.filter(state=Delivery.State.FAILED)

    def delivered(self):
        return self.filter(state__in=Delivery.DELIVERED_STATES)

    def bodies_past_retention(self, now: datetime | None = None):
        """Answered deliveries whose body is still kept, answered longer than MPFEED_BODY_RETENTION_DAYS ago."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.MPFEED_BODY_RETENTION_DAYS)
        return self.filter(state__in=Delivery.BODY_KEPT_STATES, payload__isnull=False, finished_at__lt=cutoff)

    def release_old_bodies(self, now: datetime | None = None, *, chunk: int = 500) -> int:
        """Drop the bodies past the retention period, keeping every result (state, answers, refs, ids); a chunk
        of rows per statement, so that no transaction is long. Failed deliveries keep theirs: replays resend them.
        Returns how many bodies were dropped."""
        released = 0
        while True:
            pks = list(self.bodies_past_retention(now).values_list("pk", flat=True)[:chunk])
            if not pks:
                return released
            released += Delivery.objects.filter(pk__in=pks).update(payload=None)


class Delivery(models.Model):
    """One HTTP request of up to 100 batches: the outbox row, written before its first send."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        PARTIAL = "partial", "Accepted, some batches refused"
        REJECTED = "rejected", "Refused by mParticle"
        SPLIT = "split", "Split into smaller requests"
        FAILED = "failed", "Failed (retryable)"

    # Accepted by mParticle, whole or with some batches refused: what counts as delivered (the staff home's figures).
    DELIVERED_STATES = (State.ACCEPTED, State.PARTIAL)
    # Answered for good: their bodies are kept for MPFEED_BODY_RETENTION_DAYS for people to see (the sent-data
    # search), then dropped. A split delivery's batches are its parts' bodies; a failed one keeps its body for
    # replays, however old; a pending one needs it to be sent.
    BODY_KEPT_STATES = (State.ACCEPTED, State.PARTIAL, State.REJECTED)

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="deliveries")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="deliveries")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="parts")
    sequence = models.PositiveIntegerField(help_text="Order of the request within its run.")
    path = models.CharField(max_length=40, default=schema.BULK_PATH)
    # The exact body (zlib): kept while pending or failed so that every retry and replay sends the same bytes, and
    # once answered for MPFEED_BODY_RETENTION_DAYS (for the sent-data search), then dropped (BODY_KEPT_STATES).
    payload = models.BinaryField(null=True, blank=True)
    payload_bytes = models.PositiveIntegerField(default=0)
    batch_count = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    source_request_ids = models.JSONField(default=list)
    # For each batch, the source records it carries (file line or record key).
    record_refs = models.JSONField(default=list)
    # Events per batch, to count what was accepted when some batches are refused.
    batch_events = models.JSONField(default=list)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    throttled_count = models.PositiveIntegerField(default=0, help_text="429 answers.")
    seconds_waited = models.FloatField(default=0)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Last HTTP status.")
    last_error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["run", "sequence"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["run", "sequence"], name="delivery_unique_sequence_per_run")]
        indexes = [
            # The engine's "pending deliveries of this run, in order" and the admin's state filter.
            models.Index(fields=["run", "state", "sequence"], name="delivery_run_state"),
            # Replays: a workspace's failed deliveries since a time.
            models.Index(fields=["workspace", "state", "created_at"], name="delivery_workspace_state"),
            # Retention: the answered deliveries whose body is still kept, by when they were answered.
            models.Index(
                fields=["finished_at"],
                name="delivery_kept_body",
                condition=Q(payload__isnull=False, state__in=["accepted", "partial", "rejected"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Delivery {self.run_id}.{self.sequence} ({self.get_state_display()})"

    @staticmethod
    def compress(body: bytes) -> bytes:
        return zlib.compress(body, 6)

    def body(self) -> bytes:
        if self.payload is None:
            raise ValueError("the payload was released: split, or answered longer ago than MPFEED_BODY_RETENTION_DAYS")
        return zlib.decompress(bytes(self.payload))

    def keeps_body_after(self, state: str) -> bool:
        """Whether the body stays once the delivery settles in `state` (MPFEED_BODY_RETENTION_DAYS 0: dropped as
        soon as it is answered for good)."""
        if state in (self.State.FAILED, self.State.PENDING):
            return True
        return state in self.BODY_KEPT_STATES and settings.MPFEED_BODY_RETENTION_DAYS > 0

    def batches(self) -> list[dict] | None:
        """The delivery's batches exactly as they were sent, while the body is kept; None after. (The body holds
        no credential: they go in the request's Authorization header, never stored here.)"""
        return orjson.loads(self.body()) if self.payload is not None else None

    def endpoint(self) -> str:
        return self.workspace.base_url.rstrip("/") + self.path

    def batch_outcome(self, source_request_id: str, refused: dict[str, str]) -> tuple[str, str]:
        """What became of one of its batches, for people: (a level — ok, warn, bad, muted — and a text).
        `refused` maps the source_request_ids mParticle refused to its reason (the server's RejectedRecords)."""
        if self.state == self.State.PENDING:
            return "muted", "not answered yet" if self.attempts else "waiting to be sent"
        if self.state == self.State.FAILED:
            return "bad", f"failed, replayable: {self.last_error or 'no answer'}"
        if self.state == self.State.SPLIT:
            return "muted", "split into smaller requests"
        if source_request_id in refused or self.state == self.State.REJECTED:
            return "bad", f"refused by mParticle: {refused.get(source_request_id) or self.last_error}"
        return "ok", "accepted"


class SentKeyQuerySet(models.QuerySet):
    def past_retention(self, now: datetime | None = None):
        """Keys of batches built longer than MPFEED_SEARCH_RETENTION_DAYS ago, once their delivery is answered for
        good (a pending or failed delivery may still be sent, or replayed: its batches stay searchable)."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.MPFEED_SEARCH_RETENTION_DAYS)
        return self.filter(created_at__lt=cutoff).exclude(
            delivery__state__in=[Delivery.State.PENDING, Delivery.State.FAILED]
        )

    def prune(self, now: datetime | None = None, *, chunk: int = 2000) -> int:
        """Delete the keys past retention, a chunk at a time; returns how many."""
        deleted = 0
        while True:
            pks = list(self.past_retention(now).values_list("pk", flat=True)[:chunk])
            if not pks:
                return deleted
            deleted += SentKey.objects.filter(pk__in=pks).delete()[0]

    def write(self, workspace_id: int, rows: Iterable[tuple[int, int, str, str]], now: datetime | None = None) -> int:
        """Insert (delivery id, batch index, kind, value) rows of one workspace, cut to the columns' lengths; returns
        how many. A run writes about one row per event: feeds.db.insert_rows, not bulk_create."""
        length = SentKey.VALUE_LENGTH
        created = db.db_datetime(now or timezone.now())
        return db.insert_rows(
            SentKey,
            ("delivery", "workspace", "batch", "kind", "value", "created_at"),
            ((d, workspace_id, b, k[:60], v[:length], created) for d, b, k, v in rows),
        )

    def matching(self, value: str, workspace: Workspace | None = None):
        """The batches (delivery id, batch index) holding `value` as an identity, an mpid, a source_request_id or
        an event's source_message_id — as it was sent — newest first, across runs (and workspaces)."""
        rows = self.filter(value__in=SentKey.candidates(value))
        if workspace is not None:
            rows = rows.filter(workspace=workspace)
        return rows.values("delivery_id", "batch").distinct().order_by("-delivery_id", "batch")


class SentKey(models.Model):
    """What a sent batch can be found by: one of its user's identities (e-mail, customer id, … as named in
    user_identities), its mpid, a device or partner identity, its source_request_id, or one of its events'
    source_message_ids. Written with the delivery (feeds.reading), moved with its batch when a delivery is split,
    deleted MPFEED_SEARCH_RETENTION_DAYS after (SentKeyQuerySet.prune). Values are kept as sent, in plain text and
    indexed: staff search by a client's customer's plain e-mail address, so a hash would not do; they are kept
    no longer than the retention period."""

    VALUE_LENGTH = 255

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="keys")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    batch = models.PositiveIntegerField(help_text="The batch's place in the delivery's body.")
    kind = models.CharField(max_length=60, help_text="e.g. email, customer_id, mpid, source_message_id.")
    value = models.CharField(max_length=VALUE_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)

    objects = SentKeyQuerySet.as_manager()

    class Meta:
        indexes = [
            # The search: a value's batches, newest delivery first.
            models.Index(fields=["value", "delivery", "batch"], name="sentkey_value"),
            # Retention.
            models.Index(fields=["created_at"], name="sentkey_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}={self.value} (delivery {self.delivery_id}, batch {self.batch})"

    @classmethod
    def candidates(cls, value: str) -> list[str]:
        """The stored values a searched one matches: itself, exactly (ids are case-sensitive), and for an e-mail
        address its lower-case form too (mappings usually lower them; people type them as they come)."""
        value = value[: cls.VALUE_LENGTH]
        return list(dict.fromkeys([value, value.lower()])) if "@" in value else [value]


class RejectedRecord(models.Model):
    """A source record that could not become a valid batch, or whose batch mParticle refused."""

    class Stage(models.TextChoices):
        SOURCE = "source", "Reading the source"
        MAPPING = "mapping", "Mapping"
        SERVER = "server", "Refused by mParticle"

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="rejects")
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="rejects")
    stage = models.CharField(max_length=20, choices=Stage.choices)
    ref = models.CharField(max_length=300, help_text="Where the record came from: file line or record key.")
    reason = models.TextField()
    excerpt = models.TextField(blank=True)
    source_request_id = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "stage"], name="rejected_run_stage")]

    def __str__(self) -> str:
        return f"{self.ref}: {self.reason[:80]}"


class DeliveryAttempt(models.Model):
    """One HTTP attempt of a delivery: what was answered, how fast, and what the server asked."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=20)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    retry_after = models.FloatField(null=True, blank=True)
    rate_limit_used = models.PositiveSmallIntegerField(null=True, blank=True)
    rate_limit_scope = models.CharField(max_length=40, blank=True)
    waited = models.FloatField(default=0, help_text="Seconds waited after this attempt.")
    events_accepted = models.PositiveIntegerField(
        default=0, help_text="Events this answer accepted (all of them, or those of the batches a 202 did not name)."
    )
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "id"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.status or self.outcome}"


class WorkspacePace(models.Model):
    """The pace at which a workspace is sent to, shared by every sending process, and the limit learned from
    mParticle's answers (feeds.mparticle.pace holds the rules; feeds.pacing keeps them in this row)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="pace")
    rate = models.FloatField(help_text="Batches per second sent at now.")
    limit = models.FloatField(
        default=0, help_text="The limit learned from mParticle's answers (batches per second); never above the budget."
    )
    # The rest is the pace's working state (epoch seconds where it is a time): see feeds.mparticle.pace.PaceState.
    next_at = models.FloatField(default=0)
    last_send_at = models.FloatField(default=0)
    read_at = models.FloatField(default=0)
    reading = models.FloatField(default=0, help_text="The limit as last read from a quiet request (0: none).")
    read_share = models.FloatField(default=0.99)
    observed_at = models.FloatField(default=0)
    hold_until = models.FloatField(default=0)
    hold = models.FloatField(default=10)
    probe_step = models.FloatField(default=0)
    gentle_until = models.FloatField(default=0)
    throttled_at = models.FloatField(default=0)
    learned = models.FloatField(default=0)
    accepted = models.FloatField(default=0)
    ceiling = models.FloatField(default=0)
    used = models.FloatField(default=-1)
    used_at = models.FloatField(default=0)
    # For the metrics: every answer, and the 429s among them, since the row was created.
    requests_total = models.PositiveBigIntegerField(default=0)
    throttled_total = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "workspace pace"

    def __str__(self) -> str:
        return f"{self.workspace}: {self.rate:.0f} batches/s (limit {self.limit:.0f})"

    @property
    def learned_from(self) -> str:
        """Where the limit comes from, for people."""
        if self.reading:
            return "read from mParticle's answers"
        if self.learned:
            return "learned from 429 answers"
        return "the configured budget"

    @property
    def throttled_recently(self) -> bool:
        return bool(self.throttled_at) and time.time() - self.throttled_at < 300

    @property
    def summary(self) -> str:
        """The learned pace, for people: "sent at 131 batches/s; limit 133 batches/s, read from mParticle's answers"."""
        return f"sent at {self.rate:.0f} batches/s; limit {self.limit:.0f} batches/s, {self.learned_from}"


class SenderQuerySet(models.QuerySet):
    def alive(self, now=None, within: float | None = None):
        """Senders that beat in the last `within` seconds (default STALE_SECONDS) and did not stop."""
        now = now or timezone.now()
        since = now - timedelta(seconds=Sender.STALE_SECONDS if within is None else within)
        return self.filter(stopped_at__isnull=True, heartbeat_at__gte=since)


class Sender(models.Model):
    """A process that sends deliveries of many runs at once (feeds.dispatch), as long as it beats."""

    STALE_SECONDS = 30

    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    lanes = models.PositiveIntegerField(default=0, help_text="Runs it is sending for now.")
    in_flight = models.PositiveIntegerField(default=0, help_text="Requests waiting for an answer now.")
    requests = models.PositiveBigIntegerField(default=0, help_text="Requests sent since it started.")

    objects = SenderQuerySet.as_manager()

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class CredentialLinkQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(used_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)


class CredentialLink(models.Model):
    """A one-time link for a client's contact to hand over the Feed's key and secret. Only the token's hash is
    stored; the link works once (until credentials pass the connection test), expires, and counts attempts."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="credential_links")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Connection tests through this link that mParticle answered (accepted or refused)."
    )
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # What the client handed over (never the secret): the pod and the key's last characters.
    received_pod = models.CharField(max_length=20, blank=True, default="")
    received_key_hint = models.CharField(max_length=8, blank=True, default="")

    objects = CredentialLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Credential link for {self.workspace} ({self.state})"

    @classmethod
    def issue(cls, workspace: Workspace, user=None, hours: float | None = None) -> tuple[CredentialLink, str]:
        """A new link; returns it and the token (shown once: only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        hours = settings.MPFEED_CREDENTIAL_LINK_HOURS if hours is None else hours
        link = cls.objects.create(
            workspace=workspace,
            token_hash=token_hash(token),
            created_by=user if user is not None and user.is_authenticated else None,
            expires_at=timezone.now() + timedelta(hours=hours),
        )
        return link, token

    @classmethod
    def find(cls, token: str) -> CredentialLink | None:
        if not token:
            return None
        return cls.objects.select_related("workspace").filter(token_hash=token_hash(token)).first()

    # The embeddable form (/connect/embed/<token>/) works inside a partner's frame, where the site's cookies are
    # third-party (blocked or partitioned): instead of the session, its POST carries this signed ticket, naming
    # the link and the partner page's origin, valid EMBED_TICKET_SECONDS. The ticket is the POST's only
    # authority (no cookie is ever read), so a forged POST without one is refused: it stands for the CSRF token.
    EMBED_TICKET_SALT = "mpfeed.credential-link.embed"
    EMBED_TICKET_SECONDS = 3600

    def embed_ticket(self, origin: str) -> str:
        return signing.dumps({"link": self.pk, "origin": origin}, salt=self.EMBED_TICKET_SALT, compress=True)

    @classmethod
    def from_embed_ticket(cls, ticket: str) -> tuple[CredentialLink | None, str]:
        """The link and the origin a ticket names; (None, "") when it is forged, altered or too old."""
        try:
            data = signing.loads(ticket, salt=cls.EMBED_TICKET_SALT, max_age=cls.EMBED_TICKET_SECONDS)
            link_id, origin = int(data["link"]), str(data["origin"])
        except (signing.BadSignature, KeyError, TypeError, ValueError):
            return None, ""
        return cls.objects.select_related("workspace").filter(pk=link_id).first(), origin

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.used_at:
            return "used"
        if self.expires_at <= timezone.now():
            return "expired"
        return "open"

    @property
    def usable(self) -> bool:
        return self.state == "open"

    @property
    def exhausted(self) -> bool:
        """Whether the link has had all the connection tests it may try (MPFEED_CREDENTIAL_LINK_ATTEMPTS)."""
        return self.attempts >= settings.MPFEED_CREDENTIAL_LINK_ATTEMPTS

    def count_attempt(self) -> bool:
        """Count one connection test tried through the link, atomically and only while it is open and under its
        limit: False when it is not (then refreshed, to tell which: `usable`, `exhausted`)."""
        now = timezone.now()
        counted = (
            CredentialLink.objects.usable(now)
            .filter(pk=self.pk, attempts__lt=settings.MPFEED_CREDENTIAL_LINK_ATTEMPTS)
            .update(attempts=F("attempts") + 1, last_attempt_at=now)
        )
        self.refresh_from_db(fields=["attempts", "last_attempt_at", "used_at", "revoked_at"])
        return bool(counted)

    def refund_attempt(self) -> None:
        """Give back an attempt counted by count_attempt for a test that never reached mParticle (a network
        error, an endpoint this deployment refuses): only tests mParticle judged use the link up."""
        CredentialLink.objects.filter(pk=self.pk, attempts__gt=0).update(attempts=F("attempts") - 1)
        self.refresh_from_db(fields=["attempts"])

    ADDRESS_SCOPE = "link-test"
    ADDRESS_WINDOW = 3600  # seconds

    @classmethod
    def test_allowed_from(cls, address: str) -> datetime | None:
        """Count a connection test from this network address: None once it tried MPFEED_LINK_TESTS_PER_ADDRESS
        in the hour, whatever links (one network trying many links, or one link from many tabs, is slowed down);
        else the window it was counted in (for `refund_test_from`)."""
        return AddressAttempt.take(
            cls.ADDRESS_SCOPE, address, settings.MPFEED_LINK_TESTS_PER_ADDRESS, cls.ADDRESS_WINDOW
        )

    @classmethod
    def refund_test_from(cls, address: str, window_start: datetime) -> None:
        AddressAttempt.release(cls.ADDRESS_SCOPE, address, window_start)

    def revoke(self) -> None:
        CredentialLink.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.refresh_from_db(fields=["revoked_at"])

    def redeem(self, pod: str, api_key: str, api_secret: str, tested: datetime) -> Workspace | None:
        """Use the link up with credentials that passed a connection test at `tested`, in one transaction (of
        two concurrent redemptions one wins). They are used at once, or held for staff when the workspace asks
        for confirmation. An expiry during the test does not count (the attempt began in time). Returns the
        workspace as stored, or None when the link was used or revoked meanwhile."""
        with transaction.atomic():
            claimed = CredentialLink.objects.filter(pk=self.pk, used_at__isnull=True, revoked_at__isnull=True).update(
                used_at=timezone.now(), received_pod=pod, received_key_hint=key_hint(api_key.strip())
            )
            if not claimed:
                return None
            workspace = Workspace.objects.select_for_update().get(pk=self.workspace_id)
            workspace.receive_tested_credentials(pod, api_key, api_secret, tested)
        self.refresh_from_db()
        return workspace

    @property
    def received_pod_label(self) -> str:
        return Workspace.Pod(self.received_pod).label if self.received_pod in Workspace.Pod.values else ""


class WebhookMessage(models.Model):
    """One message (an alert or an event, feeds.events) for one webhook — the global one
    (MPFEED_ALERT_WEBHOOK_URL) or the workspace's own — kept until the receiver answers 2xx or it is given up
    on after MPFEED_WEBHOOK_ATTEMPTS tries (feeds.webhooks): a receiver that is down for a while still gets every
    message, with the same body and the same X-Mpfeed-Delivery id each time. The body never holds a secret
    (feeds.events); the signing keys are read from the settings and the workspace when it is sent."""

    class Target(models.TextChoices):
        GLOBAL = "global", "The global webhook (MPFEED_ALERT_WEBHOOK_URL)"
        WORKSPACE = "workspace", "The workspace's webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be tried again"
        SENT = "sent", "Sent"
        GAVE_UP = "gave_up", "Given up"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhook_messages")
    target = models.CharField(max_length=20, choices=Target.choices)
    event = models.CharField(max_length=60, help_text="The body's event: an alert's kind, run.finished, …")
    body = models.TextField(help_text="The exact JSON sent and signed (UTF-8).")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_due")]

    def __str__(self) -> str:
        return f"{self.event} for {self.get_target_display()} ({self.get_state_display()})"


class AlertEvent(models.Model):
    """A change of a workspace's health, and whether telling people about it worked."""

    class Kind(models.TextChoices):
        RUN_FAILED = "run_failed", "Run failed"
        CREDENTIALS_REJECTED = "credentials_rejected", "Credentials rejected"
        DELIVERIES_FAILING = "deliveries_failing", "Deliveries failing for over an hour"
        RECOVERED = "recovered", "Recovered"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    email_result = models.CharField(max_length=200, blank=True)
    webhook_result = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.get_kind_display()}"

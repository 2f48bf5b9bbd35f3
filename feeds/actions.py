"""What staff (and a client's contact) do that reaches past one model, written once for every face: the staff
pages, the admin and the credential page call these (as a management command would), and tell people what they
return.

The change of each object is a model method (Workspace.pause, Workspace.resume, Workspace.promote,
Workspace.confirm_pending_credentials, CredentialLink.redeem, Mapping.update_rules); what is here adds what
follows from it — a connection test, the blocked runs going on — and says what happened, in words for staff
(a messages level and a text). Never a key or secret in those words, nor in a log line.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from feeds import events, pipeline, sync
from feeds import mapping as mapping_rules
from feeds.models import CredentialLink, SyncJob, SyncRun, Workspace
from feeds.mparticle.client import Answer
from feeds.notices import verify_credentials
from feeds.preview import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What an action did: whether it changed anything (the admin logs it then), and what to tell staff — naming
    the workspace, as the admin lists several in one go."""

    changed: bool
    level: int
    text: str


# ---------------------------------------------------------------------------------------- pause and resume


def pause(workspace: Workspace, user) -> Done:
    """No new run starts, and unfinished runs stop (blocked) when a worker next picks them up."""
    if not workspace.pause(by=user.get_username()):
        return Done(False, messages.WARNING, f"Already paused: {workspace}.")
    return Done(
        True,
        messages.SUCCESS,
        f"Paused {workspace}: no new run starts, and unfinished runs stop (blocked) when a worker next picks them "
        "up. “Resume” continues them.",
    )


def resume(workspace: Workspace) -> Done:
    """A paused workspace sends again: its credentials are tested, and the runs the pause blocked go on when
    they pass (the test also catches keys that went stale meanwhile)."""
    if not workspace.resume():
        status = workspace.get_status_display().lower()
        return Done(False, messages.WARNING, f"{workspace} is not paused ({status}); left as it is.")
    if workspace.status == Workspace.Status.AWAITING_CREDENTIALS:
        return Done(True, messages.WARNING, f"{workspace} is resumed and awaits credentials.")
    level, text = verify_credentials(workspace)
    return Done(True, level, f"{workspace} is active again. {text}")


# ------------------------------------------------------------------------------- promotion and the way back

# What going to production, and back, does: the confirmation pages and the admin's say it before staff do it.
PROMOTE_WARNING = (
    "Runs that start from now on send to the client's production environment: their data shows in the client's "
    "live mParticle workspace, its audiences and its connected outputs.",
    "Runs already started finish in the environment they were built for.",
    "“Move back to development” undoes it for the runs that start after it.",
)
DEMOTE_WARNING = (
    "Runs that start from now on send to the client's development environment again; nothing is sent to "
    "production until the workspace is promoted again.",
    "What was sent to production stays there: moving back does not take data out of mParticle.",
)


def promote(workspace: Workspace) -> Done:
    """Development → production (Workspace.promote: only after a successful run)."""
    try:
        changed = workspace.promote()
    except ValidationError as e:
        return Done(False, messages.ERROR, f"{workspace}: {' '.join(e.messages)}")
    if not changed:
        return Done(False, messages.WARNING, f"{workspace} sends to production already.")
    log.info("workspace %s: promoted to production", workspace.pk)
    return Done(True, messages.SUCCESS, f"{workspace.name} now sends to the production environment.")


def demote(workspace: Workspace) -> Done:
    """Production → development: the way back from a promotion."""
    if not workspace.demote():
        return Done(False, messages.WARNING, f"{workspace} sends to development already.")
    log.info("workspace %s: moved back to development", workspace.pk)
    return Done(True, messages.SUCCESS, f"{workspace.name} now sends to the development environment again.")


# ---------------------------------------------------------------------------- credentials held for staff


def confirm_credentials(workspace: Workspace) -> Done:
    """Use the credentials a client handed over and staff were asked to confirm; the runs they unblock go on."""
    if not workspace.confirm_pending_credentials():
        return Done(False, messages.WARNING, f"{workspace}: no credentials were waiting for confirmation.")
    resumed = sync.resume_blocked_runs(workspace)
    runs = f" Runs resumed: {', '.join(f'#{pk}' for pk in resumed)}." if resumed else ""
    hint = workspace.api_key_hint
    return Done(True, messages.SUCCESS, f"{workspace}: the new credentials (key {hint}) are in use.{runs}")


def discard_credentials(workspace: Workspace) -> Done:
    """Forget the credentials a client handed over, unconfirmed; the ones in use stay."""
    if not workspace.has_pending_credentials:
        return Done(False, messages.WARNING, f"{workspace}: no credentials were waiting for confirmation.")
    workspace.discard_pending_credentials()
    return Done(True, messages.SUCCESS, f"{workspace}: the credentials received were discarded; the ones in use stay.")


# ------------------------------------------------------------------------------- handing over through a link


@dataclass(frozen=True)
class Handover:
    answer: Answer | None  # the connection test of the credentials handed over; None: refused before testing
    workspace: Workspace | None  # as stored; None: the test failed, or the link was used or revoked meanwhile
    resumed: list[int]  # blocked runs that go on (none while the credentials wait for staff)
    refused: str = ""  # before any test: ADDRESS_LIMIT, LINK_LIMIT or LINK_GONE

    @property
    def held(self) -> bool:
        return self.workspace is not None and self.workspace.confirm_new_credentials


ADDRESS_LIMIT = "address-limit"  # this address tried MPFEED_LINK_TESTS_PER_ADDRESS tests in the hour
LINK_LIMIT = "link-limit"  # the link had MPFEED_CREDENTIAL_LINK_ATTEMPTS tests
LINK_GONE = "link-gone"  # used, revoked or expired meanwhile


def hand_over(link: CredentialLink, probe: Workspace, address: str) -> Handover:
    """A client's contact hands over credentials through `link` from network `address`: `probe` is an unsaved
    copy of the workspace with them, tested before anything is stored. When mParticle accepts them the link is
    used up with them (CredentialLink.redeem: used at once, or held for staff to confirm) and the runs they
    unblock go on.

    Only tests that mParticle judged count against the link's and the address's limits
    (CredentialLink.count_attempt, test_allowed_from): the attempt is taken before the test — so concurrent
    requests cannot overrun a limit — and given back when the test never reached mParticle (a network error,
    an endpoint this deployment refuses) or reached it without a word on the credentials (a throttle, a 5xx)."""
    window = CredentialLink.test_allowed_from(address)
    if window is None:
        log.warning("credential link %s (workspace %s): tests from one address over the hourly limit", link.pk,
                    link.workspace_id)  # fmt: skip
        return Handover(None, None, [], refused=ADDRESS_LIMIT)
    if not link.count_attempt():
        CredentialLink.refund_test_from(address, window)
        return Handover(None, None, [], refused=LINK_GONE if not link.usable else LINK_LIMIT)
    tested: datetime = timezone.now()
    answer = sync.test_connection(probe)
    log.info("credential link %s (workspace %s): connection test %s", link.pk, link.workspace_id, answer.describe())
    if not answer.judged_credentials:
        link.refund_attempt()
        CredentialLink.refund_test_from(address, window)
    if not answer.delivered:
        return Handover(answer, None, [])
    stored = link.redeem(probe.pod, probe.api_key, probe.api_secret, tested)
    if stored is None:
        # Revoked, or used by another request, while this one was testing.
        log.info("credential link %s (workspace %s): no longer usable after the test", link.pk, link.workspace_id)
        return Handover(answer, None, [])
    return _verified(answer, stored, f"credential link {link.pk} (workspace {stored.pk})", events.VIA_LINK)


def _verified(answer: Answer, stored: Workspace, who: str, via: str) -> Handover:
    """New credentials passed their test and are stored: in use now (the runs they unblock go on), or held for
    staff to confirm (Workspace.confirm_new_credentials). The webhook hears of it (feeds.events)."""
    if stored.confirm_new_credentials:
        log.info("%s: new credentials verified, held for staff", who)
        events.credentials_verified(stored, via, in_use=False)
        return Handover(answer, stored, [])
    resumed = sync.resume_blocked_runs(stored)
    log.info("%s: new credentials verified and in use; runs resumed: %s", who, resumed or "none")
    events.credentials_verified(stored, via)
    return Handover(answer, stored, resumed)


# ------------------------------------------------------------------------------------------------- a run


def cancel_run(run: SyncRun, user) -> Done:
    """End a run for good (SyncRun.cancel): what is not sent yet is not sent — its deliveries are kept, pending —
    and the readers and senders working on it stop at their next step."""
    if not run.cancel(by=user.get_username()):
        status = run.get_status_display().lower()
        return Done(False, messages.WARNING, f"Run #{run.pk} had ended already ({status}); left as it is.")
    pending = run.deliveries.pending().count()
    kept = (
        f" {pending} deliver{'y' if pending == 1 else 'ies'} not sent are kept and will not be sent." if pending else ""
    )
    return Done(True, messages.SUCCESS, f"Run #{run.pk} of {run.job} is cancelled.{kept}")


# ------------------------------------------------------------------------------------ one test record


@dataclass(frozen=True)
class Sent:
    """One request of a test record: where it went, the batches it carried and mParticle's answer."""

    path: str
    batches: list[dict]
    answer: Answer


@dataclass(frozen=True)
class TestRecord:
    """What "send one test record" did: `text` for staff; `sent` empty when it was refused before sending."""

    text: str
    sent: list[Sent] = field(default_factory=list)
    ref: str = ""  # the sample record that was sent

    @property
    def delivered(self) -> bool:
        return bool(self.sent) and all(s.answer.delivered for s in self.sent)


def send_test_record(workspace: Workspace, rules: object, sample: Sample) -> TestRecord:
    """Send the sample's first record, converted by `rules` as a run converts it (feeds.pipeline), to the
    workspace's Events API with its credentials — only in the development environment, where mParticle keeps it
    apart from production data. Refused, with the reason and nothing sent, anywhere else, without credentials,
    while paused, for a mapping that is not valid and for a first record that cannot be read or is refused."""
    if workspace.environment != Workspace.Environment.DEVELOPMENT:
        return TestRecord(
            f"Not sent: {workspace} sends to mParticle's {workspace.get_environment_display().lower()} "
            "environment. A test record goes only to a workspace in development, so that it never becomes "
            "production data."
        )
    if not workspace.has_credentials:
        return TestRecord(f"Not sent: {workspace} has no credentials yet (send the client a credential link).")
    if workspace.status == Workspace.Status.PAUSED:
        return TestRecord(f"Not sent: {workspace} is paused; resume it to send.")
    errors = mapping_rules.validate(rules)
    if errors or not isinstance(rules, dict):
        return TestRecord(f"Not sent: the mapping is not valid ({len(errors)} error(s), listed under Problems).")
    if not sample.items:
        reason = "; ".join(sample.errors[:2]) if sample.errors else "it is empty"
        return TestRecord(f"Not sent: the sample has no record to send ({reason}).")
    first = sample.items[0]
    if first.record is None:
        return TestRecord(f"Not sent: the sample's first record cannot be read ({first.error}).", ref=first.ref)
    converter = mapping_rules.compile_mapping(rules, id_salt=str(workspace.pk), data_plan=workspace.data_plan)
    now_ms = int(time.time() * 1000)
    aside, refused = pipeline.set_aside(converter, [first], SyncJob.EndpointMode.REALTIME, now_ms)
    if refused:
        return TestRecord(f"Not sent: the mapping refuses the first record ({refused[0].reason}).", ref=first.ref)

    def ids(count: int, *_) -> list[str]:
        return [str(uuid.uuid4()) for _ in range(count)]

    requests, too_large = pipeline.build(
        pipeline.in_building_order(aside), workspace.environment, ids, context=converter.context
    )
    if too_large or not requests:
        reason = too_large[0].reason if too_large else "it makes no data to send"
        return TestRecord(f"Not sent: the first record cannot be sent ({reason}).", ref=first.ref)
    try:
        client = workspace.client()
    except ValueError as e:  # e.g. an endpoint this deployment may not send to: nothing was sent
        return TestRecord(f"Not sent: {e}.", ref=first.ref)
    sent = []
    try:
        for request in requests:
            answer = client.post(request.path, request.body)
            sent.append(Sent(request.path, orjson.loads(request.body), answer))
            log.info("workspace %s: test record %s to %s: %s", workspace.pk, first.ref, request.path,
                     answer.describe())  # fmt: skip
    finally:
        client.close()
    answers = "; ".join(f"{s.path}: {s.answer.describe()}" for s in sent)
    if all(s.answer.delivered for s in sent):
        text = f"Sent {first.ref} to {workspace}'s development environment; mParticle accepted it ({answers})."
    else:
        text = f"Sent {first.ref}, but mParticle did not accept it ({answers})."
    return TestRecord(text, sent, first.ref)


# ----------------------------------------------------------------------------- replacing them server-to-server


def replace_credentials(workspace: Workspace, pod: str, api_key: str, api_secret: str) -> Handover:
    """A partner's platform sets or replaces a workspace's key and secret (the partner API): the rule of the
    hand-over without a link — the *new* credentials are tested on an unsaved copy first, the ones in use are
    kept until they pass, then used at once or held for staff (Workspace.receive_tested_credentials) and the
    runs they unblock go on."""
    tested: datetime = timezone.now()
    answer = sync.test_connection(workspace.with_credentials(pod, api_key, api_secret))
    log.info("workspace %s: connection test of new credentials %s", workspace.pk, answer.describe())
    if not answer.delivered:
        return Handover(answer, None, [])
    with transaction.atomic():
        stored = Workspace.objects.select_for_update().get(pk=workspace.pk)
        stored.receive_tested_credentials(pod, api_key, api_secret, tested)
    return _verified(answer, stored, f"workspace {stored.pk}", events.VIA_API)

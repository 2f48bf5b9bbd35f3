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
from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.db import transaction
from django.utils import timezone

from feeds import sync
from feeds.models import CredentialLink, Workspace
from feeds.mparticle.client import Answer
from feeds.notices import verify_credentials

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
    answer: Answer  # the connection test of the credentials handed over
    workspace: Workspace | None  # as stored; None: the test failed, or the link was used or revoked meanwhile
    resumed: list[int]  # blocked runs that go on (none while the credentials wait for staff)

    @property
    def held(self) -> bool:
        return self.workspace is not None and self.workspace.confirm_new_credentials


def hand_over(link: CredentialLink, probe: Workspace) -> Handover:
    """A client's contact hands over credentials through `link` (one counted attempt, see
    CredentialLink.count_attempt): `probe` is an unsaved copy of the workspace with them, tested before anything
    is stored. When mParticle accepts them the link is used up with them (CredentialLink.redeem: used at once,
    or held for staff to confirm) and the runs they unblock go on."""
    tested: datetime = timezone.now()
    answer = sync.test_connection(probe)
    log.info("credential link %s (workspace %s): connection test %s", link.pk, link.workspace_id, answer.describe())
    if not answer.delivered:
        return Handover(answer, None, [])
    stored = link.redeem(probe.pod, probe.api_key, probe.api_secret, tested)
    if stored is None:
        # Revoked, or used by another request, while this one was testing.
        log.info("credential link %s (workspace %s): no longer usable after the test", link.pk, link.workspace_id)
        return Handover(answer, None, [])
    if stored.confirm_new_credentials:
        log.info("credential link %s (workspace %s): credentials received and verified, held for staff", link.pk,
                 stored.pk)  # fmt: skip
        return Handover(answer, stored, [])
    resumed = sync.resume_blocked_runs(stored)
    log.info("credential link %s (workspace %s): credentials received and verified; runs resumed: %s", link.pk,
             stored.pk, resumed or "none")  # fmt: skip
    return Handover(answer, stored, resumed)


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
    if stored.confirm_new_credentials:
        log.info("workspace %s: new credentials verified, held for staff", stored.pk)
        return Handover(answer, stored, [])
    resumed = sync.resume_blocked_runs(stored)
    log.info("workspace %s: new credentials verified and in use; runs resumed: %s", stored.pk, resumed or "none")
    return Handover(answer, stored, resumed)

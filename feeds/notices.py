"""What staff are told after an action (replays, connection tests), in plain words: shared by the admin and the
staff pages. Never includes a key or secret (they are not in what is worded here)."""

from __future__ import annotations

from django.contrib import messages

from feeds import sync
from feeds.models import Workspace
from feeds.mparticle.client import Answer, Outcome


def replay_message(count: int, queued: list[int], *, nothing: str) -> tuple[int, str]:
    """What a replay did, in words: how many deliveries, which runs were queued, or why nothing happened."""
    if not count:
        return messages.WARNING, f"Nothing to replay: {nothing}"
    text = f"Replayed {count} delivery(ies); "
    if queued:
        return messages.SUCCESS, text + "queued run(s) " + ", ".join(f"#{pk}" for pk in queued) + "."
    return messages.SUCCESS, text + (
        "no run was queued: their run is still working and sends them, or it is queued by the sweeper once "
        "its job's current run is over."
    )


def credentials_message(answer: Answer, resumed: int) -> tuple[int, str]:
    """The connection test's answer for staff. Never includes the key or secret (they are not in the answer)."""
    if answer.delivered:
        return (
            messages.SUCCESS,
            f"Credentials verified: mParticle accepted the connection test; {resumed} blocked run(s) resumed.",
        )
    not_verified = "The credentials are kept but not verified; blocked runs stay blocked."
    if answer.outcome is Outcome.FORBIDDEN:
        return (
            messages.ERROR,
            "mParticle refused these credentials (HTTP 403). Check the Feed's API key and secret and enter them "
            "again; runs stay blocked until new credentials pass.",
        )
    if answer.outcome is Outcome.UNAUTHORIZED:
        return (
            messages.ERROR,
            "mParticle answered that no credentials reached it (HTTP 401). Enter the API key and secret again; "
            "runs stay blocked until new credentials pass.",
        )
    if answer.outcome is Outcome.NETWORK_ERROR:
        return (
            messages.WARNING,
            f"mParticle could not be reached for the connection test ({answer.error}). {not_verified}",
        )
    if answer.outcome is Outcome.THROTTLED:
        return (
            messages.WARNING,
            f"mParticle is rate limiting this workspace (HTTP 429), so the connection test could not run. "
            f"{not_verified} Try again in a minute.",
        )
    if answer.outcome is Outcome.SERVER_ERROR:
        return (
            messages.WARNING,
            f"mParticle had a server error (HTTP {answer.status}) during the connection test. {not_verified} "
            "Try again later.",
        )
    return (
        messages.WARNING,
        f"mParticle gave an unexpected answer to the connection test ({answer.describe()}). {not_verified}",
    )


def verify_credentials(workspace: Workspace) -> tuple[int, str]:
    """Test the workspace's credentials with mParticle and resume its blocked runs when they pass."""
    if not workspace.has_credentials:
        return messages.WARNING, "There are no credentials to test yet."
    try:
        verification = sync.verify_and_resume(workspace)
    except ValueError as e:
        # The workspace cannot be sent to from this deployment (e.g. the sandbox pod where it is not allowed).
        return messages.ERROR, f"The credentials could not be tested: {e}."
    return credentials_message(verification.answer, len(verification.resumed))

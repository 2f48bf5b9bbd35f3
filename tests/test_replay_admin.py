"""Replays and the request inspector in the admin, the replay command, credential checks, pause and resume."""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from feeds import admin as feeds_admin
from feeds import sync
from feeds.management.commands.replay import parse_since
from feeds.models import Delivery, DeliveryAttempt, SyncRun, Workspace
from sandbox.server import FaultConfig
from tests.helpers import (
    SANDBOX_KEY,
    SANDBOX_SECRET,
    make_job,
    make_workspace,
    messages_of,
    purchase_rows,
    run_job,
    write_csv,
)
from tests.helpers import workspace_form_data as form_data

pytestmark = pytest.mark.django_db

ROWS = 5


def url(model, view: str, *args) -> str:
    return reverse(f"admin:feeds_{model._meta.model_name}_{view}", args=args)


def page(client, address: str) -> str:
    """GET a page that must exist and must not show the workspace's credentials."""
    response = client.get(address)
    assert response.status_code == 200, address
    text = response.content.decode()
    assert SANDBOX_SECRET not in text and SANDBOX_KEY not in text, address
    return text


def act(client, model, action: str, objs, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [o.pk for o in objs], "index": 0, **extra}
    response = client.post(url(model, "changelist"), data, follow=True)
    if response.status_code == 200 and response.context is not None:
        assert SANDBOX_SECRET not in response.content.decode()
    return response


def message_ids(sandbox) -> list[str]:
    return [e["data"]["source_message_id"] for e in sandbox.events()]


def healthy(sandbox) -> None:
    sandbox.configure(faults=FaultConfig())


def assert_delivered_once(run: SyncRun, sandbox, events: int = ROWS) -> None:
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.events_accepted == events
    ids = message_ids(sandbox)
    assert len(ids) == len(set(ids)) == events
    assert sandbox.duplicates() == []
    assert all(d.state == Delivery.State.ACCEPTED and d.payload is not None for d in run.deliveries.all())


# ------------------------------------------------------------------------------------------------ the cast


@pytest.fixture
def charlie(charlie):
    """Here charlie may also look at workspaces (still changing nothing)."""
    charlie.user_permissions.add(Permission.objects.get(content_type__app_label="feeds", codename="view_workspace"))
    return charlie


@pytest.fixture
def failed_run(sandbox, tmp_path, settings) -> SyncRun:
    """Every request answered 5xx and no retry horizon: the run's 3 deliveries are parked as failed."""
    settings.MPFEED_RETRY_HORIZON = 0
    settings.MPFEED_CHUNK_SIZE = 2
    settings.MPFEED_GROUP_WINDOW_RECORDS = 2  # deliveries every 2 records
    sandbox.configure(faults=FaultConfig(error_rate=1.0))
    data = purchase_rows(ROWS)
    data[0]["first_name"] = "<b>Bold</b>"
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "orders.csv", data), name="orders")
    run = run_job(job)
    assert run.status == SyncRun.Status.FAILED, run.error
    assert run.error.startswith("3 request(s) could not be delivered")
    assert [d.state for d in run.deliveries.all()] == [Delivery.State.FAILED] * 3
    assert sandbox.events() == []
    return run


@pytest.fixture
def blocked_run(sandbox, tmp_path) -> SyncRun:
    """The workspace holds a secret mParticle refuses: the run is blocked, its deliveries kept."""
    workspace = make_workspace(sandbox)
    workspace.set_credentials(SANDBOX_KEY, "an-old-secret")
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(ROWS)), name="orders")
    run = run_job(job)
    assert run.status == SyncRun.Status.BLOCKED, run.error
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    return run


# ------------------------------------------------------------------------------------------ the actions


def test_replaying_selected_deliveries_delivers_them_once(staff, failed_run, sandbox, sync_q):
    healthy(sandbox)
    response = act(staff, Delivery, "replay_selected", failed_run.deliveries.all())
    assert response.status_code == 200
    assert messages_of(response) == [f"Replayed 3 delivery(ies); queued run(s) #{failed_run.pk}."]
    assert_delivered_once(failed_run, sandbox)


def test_replaying_one_delivery_leaves_the_others_failed(staff, failed_run, sandbox, sync_q):
    healthy(sandbox)
    first = failed_run.deliveries.get(sequence=1)
    response = act(staff, Delivery, "replay_selected", [first])
    assert messages_of(response) == [f"Replayed 1 delivery(ies); queued run(s) #{failed_run.pk}."]
    first.refresh_from_db()
    assert first.state == Delivery.State.ACCEPTED
    failed_run.refresh_from_db()
    assert failed_run.status == SyncRun.Status.FAILED
    assert failed_run.error.startswith("2 request(s) could not be delivered")
    assert len(set(message_ids(sandbox))) == len(sandbox.events()) == first.event_count


def test_replaying_deliveries_that_did_not_fail_says_so(staff, failed_run, sandbox, sync_q):
    healthy(sandbox)
    act(staff, Delivery, "replay_selected", failed_run.deliveries.filter(sequence=1))
    response = act(staff, Delivery, "replay_selected", failed_run.deliveries.all())
    assert messages_of(response) == [
        f"Replayed 2 delivery(ies); queued run(s) #{failed_run.pk}. "
        "The other 1 selected delivery(ies) had not failed and were left as they are."
    ]
    response = act(staff, Delivery, "replay_selected", failed_run.deliveries.all())
    assert messages_of(response) == [
        "Nothing to replay: none of the 3 selected deliveries has failed (only failed ones are sent again)."
    ]
    assert [m.level_tag for m in response.context["messages"]] == ["warning"]
    assert_delivered_once(failed_run, sandbox)


def test_a_replay_queues_only_the_run_id(staff, failed_run, sandbox):
    from django_q.models import OrmQ

    response = act(staff, Delivery, "replay_selected", failed_run.deliveries.all())
    assert messages_of(response) == [f"Replayed 3 delivery(ies); queued run(s) #{failed_run.pk}."]
    failed_run.refresh_from_db()
    assert failed_run.status == SyncRun.Status.QUEUED and failed_run.error == ""
    assert set(failed_run.deliveries.values_list("state", flat=True)) == {Delivery.State.PENDING}
    [queued] = OrmQ.objects.all()
    assert queued.task["func"] == "feeds.tasks.process_run"
    assert queued.task["args"] == (failed_run.pk,) and queued.task["kwargs"] == {}


def test_replaying_selected_runs_delivers_their_failed_deliveries_once(staff, failed_run, sandbox, sync_q):
    healthy(sandbox)
    response = act(staff, SyncRun, "replay_failed", [failed_run])
    assert messages_of(response) == [f"Replayed 3 delivery(ies); queued run(s) #{failed_run.pk}."]
    assert_delivered_once(failed_run, sandbox)
    response = act(staff, SyncRun, "replay_failed", [failed_run])
    assert messages_of(response) == ["Nothing to replay: the selected run(s) have no failed deliveries."]


def test_replaying_a_workspace_takes_the_last_24_hours(staff, failed_run, sandbox, sync_q):
    healthy(sandbox)
    old = failed_run.deliveries.get(sequence=3)
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=25))
    response = act(staff, Workspace, "replay_last_day", [failed_run.workspace])
    assert messages_of(response) == [f"Acme: Replayed 2 delivery(ies); queued run(s) #{failed_run.pk}."]
    old.refresh_from_db()
    assert old.state == Delivery.State.FAILED
    assert len(set(message_ids(sandbox))) == len(sandbox.events()) == ROWS - old.event_count

    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now())
    response = act(staff, Workspace, "replay_last_day", [failed_run.workspace])
    assert messages_of(response) == [f"Acme: Replayed 1 delivery(ies); queued run(s) #{failed_run.pk}."]
    assert_delivered_once(failed_run, sandbox)
    response = act(staff, Workspace, "replay_last_day", [failed_run.workspace])
    assert messages_of(response) == ["Acme: Nothing to replay: no delivery failed in the last 24 hours."]


# ------------------------------------------------------------------------------------ request inspector


def inspector(text: str) -> str:
    [body] = re.findall(r'<pre class="request-body"[^>]*>(.*?)</pre>', text, re.S)
    return html.unescape(body)


def test_the_inspector_shows_a_failed_deliverys_body_as_pretty_json(staff, failed_run):
    delivery = failed_run.deliveries.get(sequence=1)
    text = page(staff, url(Delivery, "change", delivery.pk))
    expected = orjson.dumps(orjson.loads(delivery.body()), option=orjson.OPT_INDENT_2).decode()
    assert inspector(text) == expected
    assert inspector(text).startswith('[\n  {\n    "source_request_id": "')
    # Source data is escaped, never rendered as markup.
    assert "&lt;b&gt;Bold&lt;/b&gt;" in text and "<b>Bold</b>" not in text
    assert f"<strong>POST /bulkevents</strong> — {delivery.payload_bytes} bytes, 2 batch(es), 2 event(s)." in text
    assert re.search(r"<strong>Last answer:</strong> HTTP 50[023] — HTTP 50[023] \(server_error\)", text)
    assert '<pre class="response-excerpt">' in text


def test_the_inspector_says_an_accepted_body_was_released(staff, failed_run, sandbox, sync_q):
    from datetime import timedelta

    from django.utils import timezone

    from feeds import sweeper

    healthy(sandbox)
    act(staff, SyncRun, "replay_failed", [failed_run])
    delivery = failed_run.deliveries.get(sequence=1)
    # Kept for the retention period, then released.
    assert "request-body" in page(staff, url(Delivery, "change", delivery.pk))
    Delivery.objects.filter(pk=delivery.pk).update(finished_at=timezone.now() - timedelta(days=8))
    sweeper.prune_sent()
    text = page(staff, url(Delivery, "change", delivery.pk))
    assert "The body was released after it was accepted (bodies are kept 7 day(s) after their answer)." in text
    assert "request-body" not in text
    assert "<strong>Last answer:</strong> HTTP 202</p>" in text


def test_the_inspector_cuts_a_long_body_with_a_note(staff, failed_run, monkeypatch):
    monkeypatch.setattr(feeds_admin, "INSPECTOR_LIMIT", 300)
    delivery = failed_run.deliveries.get(sequence=1)
    text = page(staff, url(Delivery, "change", delivery.pk))
    assert len(inspector(text).encode()) == 300
    assert re.search(
        r"The pretty-printed body is \d+(\.\d)?\xa0(bytes|KB): only its first 300\xa0bytes are shown.", text
    )


def test_a_delivery_not_sent_yet_says_so(staff, sandbox, tmp_path):
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(1))))
    delivery = Delivery.objects.create(
        run=run, workspace=run.workspace, sequence=1, payload=Delivery.compress(b'[{"a": 1}]'), payload_bytes=10
    )
    text = page(staff, url(Delivery, "change", delivery.pk))
    assert inspector(text) == '[\n  {\n    "a": 1\n  }\n]'
    assert "<strong>Last answer:</strong> not sent yet.</p>" in text


def attempt_rows(response) -> list[DeliveryAttempt]:
    [formset] = [f for f in response.context["inline_admin_formsets"] if f.opts.model is DeliveryAttempt]
    return [form.original for form in formset]


def test_the_attempts_of_a_delivery_are_listed(staff, failed_run, sandbox, sync_q):
    delivery = failed_run.deliveries.get(sequence=2)
    response = staff.get(url(Delivery, "change", delivery.pk))
    attempts = attempt_rows(response)
    assert len(attempts) == 2 == delivery.attempts
    assert [a.outcome for a in attempts] == ["server_error", "server_error"]
    text = response.content.decode()
    for header in ["Time", "Outcome", "Status", "Latency (ms)", "Retry-After (s)", "Rate limit used (%)", "Scope"]:
        assert f">{header}" in text, header
    assert text.count('<td class="field-message">') == 2
    assert len(re.findall(r'<td class="field-time">\s*<p>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+</p>', text)) == 2

    healthy(sandbox)
    act(staff, Delivery, "replay_selected", [delivery])
    attempts = attempt_rows(staff.get(url(Delivery, "change", delivery.pk)))
    assert [(a.outcome, a.status) for a in attempts][-1] == ("accepted", 202)
    assert len(attempts) == 3


def test_only_the_newest_attempts_are_listed(staff, failed_run, monkeypatch):
    monkeypatch.setattr(feeds_admin, "ATTEMPTS_SHOWN", 1)
    delivery = failed_run.deliveries.get(sequence=1)
    newest = delivery.attempt_log.order_by("-id").first()
    assert attempt_rows(staff.get(url(Delivery, "change", delivery.pk))) == [newest]


# --------------------------------------------------------------------------------------------- run page


def test_the_run_page_puts_the_error_on_top_and_the_list_shows_it(staff, failed_run):
    text = page(staff, url(SyncRun, "change", failed_run.pk))
    assert '<p class="errornote">Failed: 3 request(s) could not be delivered' in text
    assert text.index("errornote") < text.index("Records read")
    text = page(staff, url(SyncRun, "changelist"))
    assert '<td class="field-note">3 request(s) could not be delivered' in text


def test_a_waiting_run_shows_why_and_when_it_resumes(staff, sandbox, tmp_path):
    run = sync.start_run(make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(1))))
    when = timezone.now() + timedelta(minutes=5)
    run.wait_until(when, "Waiting for rate limit")
    text = page(staff, url(SyncRun, "change", run.pk))
    assert f"<strong>{html.escape(run.error)}</strong>" in text
    assert "Resume at" in text and "Waiting for rate limit until" in text


# -------------------------------------------------------------------------------------- replay command


def replay(*args) -> str:
    out = io.StringIO()
    call_command("replay", *[str(a) for a in args], stdout=out)
    return out.getvalue().strip()


def test_the_command_replays_a_run(failed_run, sandbox, sync_q):
    healthy(sandbox)
    assert replay("--run", failed_run.pk) == f"Replayed 3 delivery(ies); queued run(s) #{failed_run.pk}."
    assert_delivered_once(failed_run, sandbox)
    assert replay("--run", failed_run.pk) == f"Replayed 0 deliveries: run #{failed_run.pk} has no failed deliveries."


def test_the_command_replays_one_delivery(failed_run, sandbox, sync_q):
    healthy(sandbox)
    delivery = failed_run.deliveries.get(sequence=2)
    assert replay("--delivery", delivery.pk) == f"Replayed 1 delivery(ies); queued run(s) #{failed_run.pk}."
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.ACCEPTED
    assert (
        replay("--delivery", delivery.pk) == f"Replayed 0 deliveries: delivery {delivery.pk} is accepted, not failed."
    )


@pytest.mark.parametrize("since", ["2020-01-01", "2020-01-01T00:00", "2020-01-01 00:00:00Z", "2020-01-01T02:00+02:00"])
def test_the_command_replays_a_workspace_since_a_date(failed_run, sandbox, sync_q, since):
    healthy(sandbox)
    assert replay("--workspace", "Acme", "--since", since) == (
        f"Replayed 3 delivery(ies); queued run(s) #{failed_run.pk}."
    )
    assert_delivered_once(failed_run, sandbox)


def test_the_command_replays_nothing_created_before_since(failed_run):
    out = replay("--workspace", "acme", "--since", "2999-01-01")
    assert out == "Replayed 0 deliveries: no delivery of Acme failed since 2999-01-01T00:00:00+00:00."
    assert failed_run.deliveries.failed().count() == 3


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-05-01", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T10:30", datetime(2026, 5, 1, 10, 30, tzinfo=UTC)),
        ("2026-05-01T10:30:00Z", datetime(2026, 5, 1, 10, 30, tzinfo=UTC)),
        ("2026-05-01T12:30:00+02:00", datetime(2026, 5, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_since_is_read_as_iso_8601_and_naive_means_utc(value, expected):
    assert parse_since(value) == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["--delivery", 999999], "No delivery with id 999999."),
        (["--run", 999999], "No run with id 999999."),
        (["--workspace", "Nobody", "--since", "2020-01-01"], "No workspace named 'Nobody'."),
        (["--workspace", "Acme", "--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 date or time"),
        (["--workspace", "Acme", "--since", "2020-13-01"], "--since '2020-13-01' is not an ISO 8601 date or time"),
        (["--workspace", "Acme"], "--workspace needs --since"),
        (["--run", 1, "--since", "2020-01-01"], "--since goes with --workspace."),
        ([], "one of the arguments --delivery --run --workspace is required"),
        (["--run", 1, "--delivery", 2], "not allowed with argument"),
        (["--run", "seven"], "invalid int value: 'seven'"),
    ],
)
def test_the_command_refuses_bad_input(failed_run, args, message):
    with pytest.raises(CommandError) as caught:
        replay(*args)
    assert message in str(caught.value)
    assert failed_run.deliveries.failed().count() == 3


# ------------------------------------------------------------------------------------------ credentials


def save_workspace(client, workspace: Workspace, **changes):
    response = client.post(url(Workspace, "change", workspace.pk), form_data(workspace, **changes), follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert SANDBOX_SECRET not in text and "an-old-secret" not in text and "still-wrong" not in text
    return response


def test_new_credentials_are_verified_and_resume_the_blocked_run(staff, blocked_run, sandbox, sync_q):
    workspace = blocked_run.workspace
    response = save_workspace(staff, workspace, new_api_secret=SANDBOX_SECRET)
    [verdict, saved] = messages_of(response)
    assert verdict == "Credentials verified: mParticle accepted the connection test; 1 blocked run(s) resumed."
    assert saved.endswith("was changed successfully.")
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE
    assert_delivered_once(blocked_run, sandbox)


def test_refused_credentials_say_so_and_the_run_stays_blocked(staff, blocked_run, sandbox, sync_q):
    workspace = blocked_run.workspace
    response = save_workspace(staff, workspace, new_api_secret="still-wrong")
    [verdict, saved] = messages_of(response)
    assert verdict.startswith("mParticle refused these credentials (HTTP 403).")
    assert [m.level_tag for m in response.context["messages"]][0] == "error"
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.CREDENTIALS_REJECTED
    assert (
        workspace.status_message == "The connection test was refused (HTTP 403 (forbidden): Invalid API key or secret)."
    )
    blocked_run.refresh_from_db()
    assert blocked_run.status == SyncRun.Status.BLOCKED
    assert sandbox.events() == []


def test_an_unreachable_api_is_reported_in_plain_words(staff):
    workspace = make_workspace()  # points at a closed loopback port
    response = save_workspace(staff, workspace, new_api_key="k2", new_api_secret="s2")
    assert messages_of(response)[0] == (
        "mParticle could not be reached for the connection test (the connection was refused). "
        "The credentials are kept but not verified; blocked runs stay blocked."
    )
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE and workspace.api_secret == "s2"


def test_saving_without_new_credentials_runs_no_connection_test(staff, sandbox):
    workspace = make_workspace(sandbox)
    response = save_workspace(staff, workspace, rate_limit="100")
    [saved] = messages_of(response)
    assert saved.endswith("was changed successfully.")
    assert sandbox.requests_log() == []


def test_the_test_credentials_action_resumes_blocked_runs(staff, blocked_run, sandbox, sync_q):
    workspace = blocked_run.workspace
    response = act(staff, Workspace, "test_credentials", [workspace])
    assert messages_of(response)[0].startswith("Acme: mParticle refused these credentials (HTTP 403).")
    # The client's mParticle workspace now accepts the stored secret.
    sandbox.add_credentials(SANDBOX_KEY, "an-old-secret")
    response = act(staff, Workspace, "test_credentials", [workspace])
    assert messages_of(response) == [
        "Acme: Credentials verified: mParticle accepted the connection test; 1 blocked run(s) resumed."
    ]
    assert_delivered_once(blocked_run, sandbox)


def test_the_test_credentials_action_reports_server_errors_and_missing_credentials(staff, sandbox):
    workspace = make_workspace(sandbox)
    empty = Workspace.objects.create(name="Empty", slug="empty")
    sandbox.queue_faults(["503"])
    response = act(staff, Workspace, "test_credentials", [workspace, empty])
    assert messages_of(response) == [
        "Acme: mParticle had a server error (HTTP 503) during the connection test. The credentials are kept but "
        "not verified; blocked runs stay blocked. Try again later.",
        "Empty: There are no credentials to test yet.",
    ]
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE


# -------------------------------------------------------------------------------------- pause and resume


def test_pause_stops_new_runs_and_resume_continues_the_blocked_ones(staff, sandbox, tmp_path, monkeypatch):
    from django_q.conf import Conf

    workspace = make_workspace(sandbox)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(ROWS)), name="orders")
    run = sync.start_run(job)
    response = act(staff, Workspace, "pause", [workspace])
    assert messages_of(response) == [
        "Paused Acme: no new run starts, and unfinished runs stop (blocked) when a worker next picks them up. "
        "“Resume” continues them."
    ]
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.PAUSED
    assert workspace.status_message.startswith("Paused by alice on ")
    assert LogEntry.objects.get().get_change_message() == "Paused."
    run = sync.run_inline(run.pk)
    assert run.status == SyncRun.Status.BLOCKED and run.error == "The workspace is paused."
    with pytest.raises(sync.SyncError, match="is paused"):
        sync.start_run(make_job(workspace, tmp_path / "other.csv", mapping=job.mapping))
    assert messages_of(act(staff, Workspace, "pause", [workspace])) == ["Already paused: Acme."]

    monkeypatch.setattr(Conf, "SYNC", True)
    response = act(staff, Workspace, "resume", [workspace])
    assert messages_of(response) == [
        "Acme is active again. Credentials verified: mParticle accepted the connection test; 1 blocked run(s) resumed."
    ]
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE and workspace.status_message == ""
    assert_delivered_once(run, sandbox)


def test_resume_only_changes_paused_workspaces(staff, sandbox):
    active = make_workspace(sandbox)
    empty = Workspace.objects.create(name="Empty", slug="empty", status=Workspace.Status.PAUSED)
    response = act(staff, Workspace, "resume", [active, empty])
    assert messages_of(response) == [
        "Acme is not paused (active); left as it is.",
        "Empty is resumed and awaits credentials.",
    ]
    active.refresh_from_db()
    empty.refresh_from_db()
    assert active.status == Workspace.Status.ACTIVE
    assert empty.status == Workspace.Status.AWAITING_CREDENTIALS
    assert sandbox.requests_log() == []


# ------------------------------------------------------------------------------------------------ access


ACTIONS = [
    (Delivery, "replay_selected", lambda run: run.deliveries.all()),
    (SyncRun, "replay_failed", lambda run: [run]),
    (Workspace, "replay_last_day", lambda run: [run.workspace]),
    (Workspace, "test_credentials", lambda run: [run.workspace]),
    (Workspace, "pause", lambda run: [run.workspace]),
]


@pytest.mark.parametrize("model, action, objs", ACTIONS, ids=[a[1] for a in ACTIONS])
def test_non_staff_are_sent_to_the_login_page(client, bob, failed_run, model, action, objs):
    client.force_login(bob)
    response = client.post(
        url(model, "changelist"), {"action": action, ACTION_CHECKBOX_NAME: [o.pk for o in objs(failed_run)]}
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login") + "?next=")
    assert failed_run.deliveries.failed().count() == 3
    assert Workspace.objects.get().status == Workspace.Status.ACTIVE


@pytest.mark.parametrize("model, action, objs", ACTIONS, ids=[a[1] for a in ACTIONS])
def test_staff_who_may_only_look_are_not_offered_the_actions(client, charlie, failed_run, model, action, objs):
    client.force_login(charlie)
    response = client.get(url(model, "changelist"))
    assert response.status_code == 200
    form = response.context["action_form"]
    offered = [name for name, _ in form.fields["action"].choices] if form else []
    assert action not in offered
    response = act(client, model, action, objs(failed_run))
    assert response.status_code == 200
    # Without any action for them the changelist ignores the request; with others it names none.
    assert messages_of(response) in ([], ["No action selected."])
    assert failed_run.deliveries.failed().count() == 3
    assert Workspace.objects.get().status == Workspace.Status.ACTIVE


def test_no_page_shows_the_credentials(staff, failed_run):
    delivery = failed_run.deliveries.first()
    for address in [
        url(Workspace, "changelist"),
        url(Workspace, "change", failed_run.workspace_id),
        url(SyncRun, "changelist"),
        url(SyncRun, "change", failed_run.pk),
        url(Delivery, "changelist"),
        url(Delivery, "change", delivery.pk),
    ]:
        page(staff, address)


def test_credentials_replaced_during_their_test_are_not_marked_verified(blocked_run, sandbox, monkeypatch):
    workspace = Workspace.objects.get(pk=blocked_run.workspace_id)
    workspace.set_credentials(SANDBOX_KEY, SANDBOX_SECRET)
    real_test = sync.test_connection

    def test_while_staff_replace_them(tested):
        answer = real_test(tested)  # these pass…
        Workspace.objects.get(pk=tested.pk).set_credentials("k-new", "untested")  # …but are replaced meanwhile
        return answer

    monkeypatch.setattr(sync, "test_connection", test_while_staff_replace_them)
    verification = sync.verify_and_resume(workspace)
    assert verification.answer.delivered and verification.resumed == []
    workspace.refresh_from_db()
    assert workspace.credentials_verified_at is None and workspace.api_secret == "untested"
    blocked_run.refresh_from_db()
    assert blocked_run.status == SyncRun.Status.BLOCKED

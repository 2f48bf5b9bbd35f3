"""Runs people can read and steer: cancelling a run (it ends cancelled, sends nothing more, keeps what it did not
send), pausing and resuming from the run and workspace pages, a replayed run's record that it failed before, a
job's runs on its page, scheduled checks that found nothing new folded into the job, and the chart's failures
and latency. Real runs against the sandbox over HTTP."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from feeds import health, scheduling, sync
from feeds.models import AlertEvent, Delivery, DeliveryAttempt, SyncJob, SyncRun, Workspace
from feeds.sweeper import resume_stalled
from feeds.views import runs
from sandbox.server import FaultConfig
from tests.helpers import (
    FakeClock,
    dispatch,
    make_job,
    make_staff,
    make_workspace,
    messages_of,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db

ROWS = 12


@pytest.fixture
def small_chunks(settings):
    settings.MPFEED_CHUNK_SIZE = 2
    settings.MPFEED_GROUP_WINDOW_RECORDS = 2  # a delivery every two records


def orders_job(sandbox, tmp_path, rows: int = ROWS, **fields) -> SyncJob:
    path = write_csv(tmp_path / "orders.csv", purchase_rows(rows))
    return make_job(make_workspace(sandbox, **fields), path, name="orders")


def read_only(run: SyncRun) -> SyncRun:
    """Read the whole run into deliveries (a worker's reading task), nothing sent yet."""
    assert sync.read_run(run.pk) is sync.Reading.DONE
    run.refresh_from_db()
    assert run.read_done and run.deliveries.pending().count() == ROWS // 2
    return run


# ------------------------------------------------------------------------------------------------- cancel


def test_a_cancelled_run_sends_nothing_more_and_keeps_its_pending_deliveries(staff, sandbox, tmp_path, small_chunks):
    run = read_only(sync.start_run(orders_job(sandbox, tmp_path)))
    response = staff.post(reverse("feeds:run_cancel", args=[run.pk]), follow=True)
    assert any(f"Run #{run.pk} of " in m and "6 deliveries not sent" in m for m in messages_of(response)), messages_of(
        response
    )
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED and run.cancelled_by == "alice" and run.finished_at
    assert "Cancelled by alice" in run.error

    # Senders, the sweeper and a replay leave it alone: nothing reaches mParticle, the deliveries stay pending.
    dispatch(run)
    assert resume_stalled() == []
    assert sync.replay_run(run) == (0, [])
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED
    assert sandbox.requests_log() == [] and run.deliveries.pending().count() == ROWS // 2
    # Nor does a worker that picks it up again, to read or to send.
    assert sync.read_run(run.pk) is sync.Reading.STOPPED
    assert sync.process_run(run.pk).status == SyncRun.Status.CANCELLED
    assert sandbox.requests_log() == []

    # The page says so: no cancel button any more, and the job can run again.
    text = staff.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert 'class="badge cancelled"' in text and "Cancel this run" not in text and 'data-live="0"' in text
    assert sync.start_run(run.job).status == SyncRun.Status.QUEUED


def test_a_run_cancelled_while_it_sends_stops_after_the_request_in_flight(sandbox, tmp_path, small_chunks):
    """The inline worker looks at the run between requests, as it does for a paused workspace."""
    job = orders_job(sandbox, tmp_path, rate_limit=1)  # one batch a second: a wait before each request
    run = sync.start_run(job)
    clock = FakeClock()
    sleep = clock.sleep

    def cancel_on_the_second_wait(seconds: float) -> None:
        sleep(seconds)
        if len(clock.waits) == 2:
            assert SyncRun.objects.get(pk=run.pk).cancel(by="bob")

    clock.sleep = cancel_on_the_second_wait
    ended = sync.run_inline(run.pk, sync.Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1)))
    assert ended is not None and ended.status == SyncRun.Status.CANCELLED and ended.cancelled_by == "bob"
    sent = len(sandbox.requests_log())
    assert 1 <= sent < ROWS // 2
    assert ended.deliveries.exclude(state=Delivery.State.PENDING).count() == sent
    assert not ended.set_aside.exists()
    # Reading is over too: a worker taking it up reads nothing more.
    chunks = ended.chunks
    assert sync.read_run(run.pk) is sync.Reading.STOPPED
    assert SyncRun.objects.get(pk=run.pk).chunks == chunks and len(sandbox.requests_log()) == sent


def test_a_sender_drops_a_run_cancelled_under_it(sandbox, tmp_path, small_chunks):
    """A sender (feeds.dispatch) looks at the runs it holds at every poll: a cancelled one is dropped."""
    run = read_only(sync.start_run(orders_job(sandbox, tmp_path, rate_limit=1)))  # waits between requests
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING)
    sent = []

    def cancel_after_the_first_request(dispatcher) -> bool:
        if sandbox.requests_log() and not sent:
            sent.append(len(sandbox.requests_log()))
            assert SyncRun.objects.get(pk=run.pk).cancel(by="alice")
        return dispatcher.polls > 0 and not dispatcher.slots and not dispatcher.sendable().exists()

    from feeds.dispatch import Dispatcher

    clock = FakeClock()
    dispatcher = Dispatcher(
        threads=0, poll=0.01, pacing=sync.Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1)),
        only={run.pk},
    )  # fmt: skip
    dispatcher.run(until=lambda: cancel_after_the_first_request(dispatcher))
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED
    assert len(sandbox.requests_log()) < ROWS // 2 and run.deliveries.pending().exists()


def test_what_a_cancelled_run_keeps_is_not_counted_as_failing(sandbox, tmp_path, small_chunks):
    run = read_only(sync.start_run(orders_job(sandbox, tmp_path)))
    run.deliveries.update(first_failure_at=timezone.now() - timedelta(hours=2), last_error="HTTP 503")
    assert health.of(run.workspace).cause == AlertEvent.Kind.DELIVERIES_FAILING
    run.cancel(by="alice")
    assert health.of(run.workspace).cause != AlertEvent.Kind.DELIVERIES_FAILING
    assert run.deliveries.pending().count() == ROWS // 2 and not Delivery.objects.to_send().exists()


def test_blocked_and_queued_runs_can_be_cancelled_but_ended_ones_not(staff, sandbox, tmp_path):
    job = orders_job(sandbox, tmp_path)
    run = sync.start_run(job)
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.BLOCKED, error="credentials refused")
    staff.post(reverse("feeds:run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED
    # New credentials do not bring it back.
    assert sync.resume_blocked_runs(job.workspace) == []

    done = run_job(job)
    assert done.status == SyncRun.Status.SUCCEEDED
    response = staff.post(reverse("feeds:run_cancel", args=[done.pk]), follow=True)
    assert any("had ended already (succeeded)" in m for m in messages_of(response))
    done.refresh_from_db()
    assert done.status == SyncRun.Status.SUCCEEDED and not done.cancelled_by


def test_cancelling_needs_the_permission_to_change_runs(client, sandbox, tmp_path):
    run = sync.start_run(orders_job(sandbox, tmp_path))
    client.force_login(make_staff("viewer", "view_syncrun", "view_workspace"))
    assert client.post(reverse("feeds:run_cancel", args=[run.pk])).status_code == 403
    text = client.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert "Cancel this run" not in text and "Pause " not in text
    run.refresh_from_db()
    assert run.status == SyncRun.Status.QUEUED


# --------------------------------------------------------------------------------------- pause and resume


def test_pause_and_resume_from_the_run_page_and_the_workspace_page(staff, sandbox, tmp_path, small_chunks):
    run = read_only(sync.start_run(orders_job(sandbox, tmp_path)))
    workspace = run.workspace
    text = staff.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert "Cancel this run" in text and f"Pause {workspace.name}" in text
    assert reverse("feeds:workspace_pause", args=[workspace.slug]) in text

    # From the run page: back to the run page, the workspace paused, the run blocked at its next step.
    response = staff.post(reverse("feeds:workspace_pause", args=[workspace.slug]), {"run": run.pk})
    assert response.status_code == 302 and response["Location"] == reverse("feeds:run", args=[run.pk])
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.PAUSED
    dispatch(run)
    assert sandbox.requests_log() == []
    assert sync.read_run(run.pk) is sync.Reading.STOPPED
    run.refresh_from_db()
    assert run.status == SyncRun.Status.BLOCKED and "paused" in run.error
    text = staff.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert f"Resume {workspace.name}" in text

    # From the workspace page: resumed after a connection test, the blocked run goes on and is sent.
    text = staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()
    assert "Resume sending" in text
    response = staff.post(reverse("feeds:workspace_resume", args=[workspace.slug]))
    assert response["Location"] == reverse("feeds:workspace", args=[workspace.slug])
    workspace.refresh_from_db()
    assert workspace.status == Workspace.Status.ACTIVE
    run.refresh_from_db()
    assert run.status == SyncRun.Status.QUEUED
    sync.run_inline(run.pk)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED and run.events_accepted == ROWS
    assert "Pause sending" in staff.get(reverse("feeds:workspace", args=[workspace.slug])).content.decode()


def test_a_run_id_of_another_workspace_sends_back_to_the_workspace(staff, sandbox, tmp_path):
    run = sync.start_run(orders_job(sandbox, tmp_path))
    other = make_workspace(sandbox, name="Other")
    response = staff.post(reverse("feeds:workspace_pause", args=[other.slug]), {"run": f"{run.pk}"})
    assert response["Location"] == reverse("feeds:workspace", args=[other.slug])
    response = staff.post(reverse("feeds:workspace_resume", args=[other.slug]), {"run": "²"})
    assert response["Location"] == reverse("feeds:workspace", args=[other.slug])


def test_the_workspace_page_cancels_its_unfinished_runs(staff, sandbox, tmp_path):
    run = sync.start_run(orders_job(sandbox, tmp_path))
    address = reverse("feeds:workspace", args=[run.workspace.slug])
    assert f'aria-label="Cancel run #{run.pk}"' in staff.get(address).content.decode()
    staff.post(reverse("feeds:run_cancel", args=[run.pk]))
    assert f'aria-label="Cancel run #{run.pk}"' not in staff.get(address).content.decode()


# ---------------------------------------------------------------------------------------- the replay record


def test_a_replayed_run_keeps_the_record_that_it_failed_before_it_recovered(staff, sandbox, tmp_path, settings):
    settings.MPFEED_RETRY_HORIZON = 0
    sandbox.configure(faults=FaultConfig(error_rate=1.0))
    run = run_job(orders_job(sandbox, tmp_path, rows=4))
    assert run.status == SyncRun.Status.FAILED
    failed_at, error = run.finished_at, run.error
    sandbox.configure(faults=FaultConfig())
    staff.post(reverse("feeds:run_replay", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == SyncRun.Status.QUEUED and run.failed_before_at == failed_at
    assert run.failed_before_error == error
    sync.run_inline(run.pk)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED and not run.error
    assert run.failed_before_at == failed_at and run.failed_before_error == error

    text = staff.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert 'id="failed-before"' in text and "could not be delivered" in text and "and it recovered" in text
    admin = staff.get(reverse("admin:feeds_syncrun_change", args=[run.pk])).content.decode()
    assert "When the run last ended failed before it was replayed" in admin and "could not be delivered" in admin
    job_page = staff.get(reverse("feeds:job_edit", args=[run.workspace.slug, run.job_id])).content.decode()
    assert "(failed before, replayed)" in job_page


def test_a_run_that_never_failed_has_no_such_record(staff, sandbox, tmp_path):
    run = run_job(orders_job(sandbox, tmp_path, rows=2))
    assert run.failed_before_at is None
    assert 'id="failed-before"' not in staff.get(reverse("feeds:run", args=[run.pk])).content.decode()


# --------------------------------------------------------------------------------------------- the job page


def test_the_job_page_lists_its_runs_a_page_at_a_time(staff, sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr("feeds.views.jobs.RUNS_PER_PAGE", 2)
    job = orders_job(sandbox, tmp_path, rows=2)
    done = [run_job(job) for _ in range(3)]
    other = run_job(make_job(job.workspace, job.source_config["path"], mapping=job.mapping, name="other"))
    address = reverse("feeds:job_edit", args=[job.workspace.slug, job.pk])
    first = staff.get(address).content.decode()
    assert f'data-run-row="{done[2].pk}"' in first and f'data-run-row="{done[1].pk}"' in first
    assert f'data-run-row="{done[0].pk}"' not in first and f'data-run-row="{other.pk}"' not in first
    assert "page 1 of 2" in first and "?runs=2#job-runs" in first
    second = staff.get(address, {"runs": 2}).content.decode()
    assert f'data-run-row="{done[0].pk}"' in second and f'data-run-row="{done[2].pk}"' not in second
    # Junk page numbers show a page, never an error.
    assert staff.get(address, {"runs": "x"}).status_code == 200


def test_the_job_page_hides_runs_without_the_permission(client, sandbox, tmp_path):
    job = orders_job(sandbox, tmp_path, rows=2)
    run = run_job(job)
    client.force_login(make_staff("jobs-only", "view_syncjob"))
    text = client.get(reverse("feeds:job_edit", args=[job.workspace.slug, job.pk])).content.decode()
    assert "Needs the permission to view sync runs." in text and f'data-run-row="{run.pk}"' not in text


# ------------------------------------------------------------------------------------------- nothing new


def test_scheduled_runs_that_find_nothing_new_are_counted_on_the_job_not_kept(staff, sandbox, tmp_path):
    path = write_csv(tmp_path / "orders.csv", purchase_rows(3))
    job = make_job(make_workspace(sandbox), path, name="orders", schedule_minutes=5)
    job.source_config = {**job.source_config, "incremental": True}
    job.save()
    first = scheduling.start_scheduled_run(job.pk)
    assert isinstance(first, SyncRun)
    assert sync.run_inline(first.pk).status == SyncRun.Status.SUCCEEDED

    # Twice nothing new: no run kept, the job counts the checks.
    for _ in range(2):
        again = scheduling.start_scheduled_run(job.pk)
        assert isinstance(again, SyncRun)
        assert sync.run_inline(again.pk) is None
        assert not SyncRun.objects.filter(pk=again.pk).exists()
    job.refresh_from_db()
    assert job.nothing_new_checks == 2 and job.nothing_new_at is not None
    assert list(job.runs.values_list("pk", flat=True)) == [first.pk]
    text = staff.get(reverse("feeds:job_edit", args=[job.workspace.slug, job.pk])).content.decode()
    assert "Checked 2 times by its schedule" in text and "nothing new, last at" in text
    # The job can run again (the folded runs held no place), and a run started by staff is always kept.
    kept = run_job(job)
    assert kept.status == SyncRun.Status.SUCCEEDED and kept.records_read == 0

    # Something new: a kept run, and the count starts again.
    write_csv(path, purchase_rows(5))
    news = scheduling.start_scheduled_run(job.pk)
    assert isinstance(news, SyncRun)
    assert sync.run_inline(news.pk).records_read == 2
    job.refresh_from_db()
    assert job.nothing_new_checks == 0
    assert "Checked" not in staff.get(reverse("feeds:job_edit", args=[job.workspace.slug, job.pk])).content.decode()


def test_a_scheduled_look_at_an_empty_inbox_is_counted_too(sandbox):
    workspace = make_workspace(sandbox)
    job = SyncJob.objects.create(
        workspace=workspace, name="pushes", mapping=make_job(workspace, "x.csv").mapping, source_kind="inbox"
    )
    assert scheduling.start_scheduled_run(job.pk) == "nothing new in the inbox"
    job.refresh_from_db()
    assert job.nothing_new_checks == 1 and not job.runs.exists()


def test_a_scheduled_run_of_a_whole_file_is_kept_even_when_empty(sandbox, tmp_path):
    job = make_job(
        make_workspace(sandbox), write_csv(tmp_path / "empty.csv", [], list(purchase_rows(1)[0])), schedule_minutes=5
    )
    run = scheduling.start_scheduled_run(job.pk)
    assert isinstance(run, SyncRun)
    ended = sync.run_inline(run.pk)
    assert ended is not None and ended.status == SyncRun.Status.SUCCEEDED


# ----------------------------------------------------------------------------------------------- the chart


def test_the_chart_counts_5xx_network_failures_and_latency(sandbox, tmp_path, settings, small_chunks):
    settings.MPFEED_RETRY_HORIZON = 3600
    sandbox.queue_faults([500, 503, "drop", 429])
    run = run_job(orders_job(sandbox, tmp_path, rows=4))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    points, _ = runs.chart_series(run)
    assert sum(p["server_errors"] for p in points) == 2
    assert sum(p["network_errors"] for p in points) == 1
    assert sum(p["throttled"] for p in points) == 1
    assert sum(p["accepted"] for p in points) == 4
    attempts = DeliveryAttempt.objects.filter(delivery__run=run, status__isnull=False)
    mean = sum(a.latency_ms for a in attempts) / attempts.count()
    [point] = points
    assert point["latency_ms"] == round(mean)


def test_a_bucket_without_answers_has_no_latency(sandbox, tmp_path, settings):
    settings.MPFEED_RETRY_HORIZON = 0
    sandbox.configure(faults=FaultConfig(drop_rate=1.0))
    run = run_job(orders_job(sandbox, tmp_path, rows=2))
    assert run.status == SyncRun.Status.FAILED
    [point] = runs.chart_series(run)[0]
    assert point["latency_ms"] is None and point["network_errors"] >= 1 and point["accepted"] == 0


def test_the_chart_buckets_are_summed_over_long_runs(sandbox, tmp_path):
    run = run_job(orders_job(sandbox, tmp_path, rows=2))
    delivery = run.deliveries.first()
    start = timezone.now() - timedelta(hours=10)
    for minutes, status, outcome in ((0, 500, "server_error"), (1, None, "network_error"), (599, 202, "accepted")):
        DeliveryAttempt.objects.create(
            delivery=delivery, at=start + timedelta(minutes=minutes), status=status, outcome=outcome, latency_ms=100
        )
    points, step = runs.chart_series(run)
    assert step > 1 and len(points) <= runs.CHART_POINTS
    assert points[0]["server_errors"] == 1 and points[0]["network_errors"] == 1 and points[0]["latency_ms"] == 100


def test_the_admin_cancels_selected_runs(staff, client, sandbox, tmp_path):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    run = sync.start_run(orders_job(sandbox, tmp_path))
    changelist = reverse("admin:feeds_syncrun_changelist")
    data = {"action": "cancel_runs", ACTION_CHECKBOX_NAME: [run.pk], "index": 0}
    response = staff.post(changelist, data, follow=True)
    assert any(f"Run #{run.pk} of " in m and "is cancelled" in m for m in messages_of(response))
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED and run.cancelled_by == "alice"
    # Without the permission to change runs the action is not offered.
    client.force_login(make_staff("viewer", "view_syncrun"))
    assert "cancel_runs" not in client.get(changelist).content.decode()

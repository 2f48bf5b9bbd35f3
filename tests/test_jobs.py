"""Jobs beyond a single file: the push inbox, schedules, incremental cursors, SQL and HTTP jobs, preview."""

from __future__ import annotations

import io
import json
import sqlite3

import orjson
import pytest
from django.core.management import call_command
from django_q.models import Schedule

from feeds import sync, tasks
from feeds.models import InboxRecord, SyncJob, SyncRun
from feeds.preview import preview_job, preview_records
from tests.helpers import (
    MAPPING,
    FakeClock,
    dispatch,
    make_job,
    make_mapping,
    make_workspace,
    purchase_rows,
    run_job,
    write_csv,
)

pytestmark = pytest.mark.django_db


def inbox_job(sandbox) -> tuple[SyncJob, str]:
    workspace = make_workspace(sandbox)
    job = SyncJob.objects.create(
        workspace=workspace, name="pushes", mapping=make_mapping(workspace), source_kind=SyncJob.SourceKind.INBOX
    )
    return job, job.new_inbox_token()


def push(client, job, token, body, content_type="application/x-ndjson"):
    return client.post(
        f"/inbox/{job.inbox_id}/", body, content_type=content_type, headers={"Authorization": f"Bearer {token}"}
    )


def ndjson(rows) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows)


class TestInbox:
    def test_a_push_is_stored_before_it_is_answered_and_forwarded_by_the_next_run(self, client, sandbox):
        job, token = inbox_job(sandbox)
        response = push(client, job, token, ndjson(purchase_rows(5)))
        assert response.status_code == 202
        assert response.json()["received"] == 5
        assert InboxRecord.objects.filter(job=job).count() == 5
        # The schedule's task reads the inbox into deliveries; a sender sends them.
        assert tasks.run_scheduled_job(job.pk) == "read"
        [run] = dispatch().runs_seen
        assert SyncRun.objects.get(pk=run).status == SyncRun.Status.SUCCEEDED
        assert len(sandbox.events()) == 5
        # Forwarded records leave the inbox (they are in the outbox); the job remembers where it is.
        assert not InboxRecord.objects.filter(job=job).exists()
        job.refresh_from_db()
        assert job.cursor["id"] >= 5
        # Nothing new: no empty run.
        assert tasks.run_scheduled_job(job.pk) == "nothing new in the inbox"
        response = push(client, job, token, orjson.dumps(purchase_rows(3, start=5)), "application/json")
        assert response.status_code == 202
        tasks.run_scheduled_job(job.pk)
        dispatch()
        assert len({e["data"]["source_message_id"] for e in sandbox.events()}) == 8

    def test_pushes_without_the_right_token_are_refused(self, client, sandbox):
        job, token = inbox_job(sandbox)
        assert client.post(f"/inbox/{job.inbox_id}/", b"{}", content_type="application/json").status_code == 401
        assert push(client, job, "wrong", ndjson([{"a": 1}])).status_code == 403
        other, _ = SyncJob.objects.get(pk=job.pk), None
        assert push(client, other, token[:-1], ndjson([{"a": 1}])).status_code == 403
        assert client.get(f"/inbox/{job.inbox_id}/").status_code == 405
        assert not InboxRecord.objects.exists()

    def test_a_push_with_a_bad_line_stores_nothing_and_says_which(self, client, sandbox):
        job, token = inbox_job(sandbox)
        response = push(client, job, token, b'{"a": 1}\nnot json\n[1]\n{"b": NaN}')
        assert response.status_code == 400
        error = response.json()["error"]
        assert "line 2: not valid JSON" in error and "line 3: expected an object" in error and "line 4" in error
        assert not InboxRecord.objects.exists()
        assert push(client, job, token, b"").status_code == 400

    def test_an_oversized_push_or_a_bad_length_is_refused_and_stores_nothing(self, client, sandbox, settings):
        job, token = inbox_job(sandbox)
        settings.MPFEED_INBOX_MAX_BYTES = 100
        response = push(client, job, token, ndjson(purchase_rows(5)))
        assert response.status_code == 413 and "over 100 bytes" in response.json()["error"]
        response = client.post(
            f"/inbox/{job.inbox_id}/", b"{}", content_type="application/json", CONTENT_LENGTH="lots",
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert response.status_code == 400 and "Content-Length" in response.json()["error"]
        assert not InboxRecord.objects.exists()

    def test_an_inbox_job_is_scheduled_every_minute_by_default(self, sandbox):
        job, _ = inbox_job(sandbox)
        schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
        assert schedule.func == "feeds.tasks.run_scheduled_job" and schedule.args == f"({job.pk},)"
        assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1


class TestSchedules:
    def test_schedules_follow_the_job(self, sandbox, tmp_path):
        job = make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(2)))
        assert not Schedule.objects.filter(name=f"mpfeed-job-{job.pk}").exists()
        job.schedule_cron = "*/15 * * * *"
        job.save()
        schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
        assert schedule.schedule_type == Schedule.CRON and schedule.cron == "*/15 * * * *"
        job.schedule_cron, job.schedule_minutes = "", 30
        job.save()
        schedule = Schedule.objects.get(name=f"mpfeed-job-{job.pk}")
        assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 30
        job.enabled = False
        job.save()
        assert not Schedule.objects.filter(name=f"mpfeed-job-{job.pk}").exists()
        job.enabled = True
        job.save()
        job.delete()
        assert not Schedule.objects.filter(name__startswith="mpfeed-job-").exists()

    def test_a_scheduled_run_is_skipped_while_one_is_unfinished(self, sandbox, tmp_path):
        job = make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(2)))
        sync.start_run(job)
        assert tasks.run_scheduled_job(job.pk).startswith("not started: ")
        assert job.runs.count() == 1

    def test_the_sweeper_schedule_exists_after_migrate(self):
        assert Schedule.objects.filter(name=tasks.SWEEPER, func="feeds.tasks.resume_stalled").exists()


class TestIncremental:
    def test_an_incremental_file_job_reads_only_what_was_appended(self, sandbox, tmp_path):
        path = write_csv(tmp_path / "o.csv", purchase_rows(4))
        job = make_job(make_workspace(sandbox), path)
        job.source_config = {**job.source_config, "incremental": True}
        job.save()
        assert run_job(job).records_read == 4
        with open(path, "a", encoding="utf-8") as f:
            for row in purchase_rows(3, start=4):
                f.write(",".join(row.values()) + "\n")
        run = run_job(job)
        assert run.records_read == 3
        assert len({e["data"]["source_message_id"] for e in sandbox.events()}) == 7

    def test_a_plain_file_job_reads_the_whole_file_each_run(self, sandbox, tmp_path):
        job = make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(4)))
        assert run_job(job).records_read == 4
        assert run_job(job).records_read == 4

    def test_a_sql_job_sends_new_and_updated_rows_only(self, sandbox, tmp_path, settings):
        db = tmp_path / "crm.db"
        with sqlite3.connect(db) as conn:
            conn.execute("create table customers (id integer primary key, email text, plan text, updated_at text)")
            conn.executemany(
                "insert into customers values (?, ?, ?, ?)",
                [(i, f"c{i}@example.com", "free", f"2026-11-0{1 + i % 5}T00:00:00") for i in range(1, 21)],
            )
        settings.MPFEED_SOURCE_DATABASES = {"crm": f"sqlite:///{db}"}
        workspace = make_workspace(sandbox)
        mapping = make_mapping(
            workspace, {"identities": {"customer_id": "id", "email": "email"}, "user_attributes": {"plan": "plan"}}
        )
        job = SyncJob.objects.create(
            workspace=workspace, name="crm", mapping=mapping, source_kind=SyncJob.SourceKind.SQL,
            source_config={"database": "crm", "query": "select * from customers", "cursor_column": "updated_at", "key_column": "id"},
        )  # fmt: skip
        assert run_job(job).records_read == 20
        with sqlite3.connect(db) as conn:
            conn.execute("update customers set plan = 'pro', updated_at = '2026-11-20T00:00:00' where id = 3")
            conn.execute("insert into customers values (21, 'new@example.com', 'free', '2026-11-21T00:00:00')")
        run = run_job(job)
        assert run.records_read == 2 and run.status == SyncRun.Status.SUCCEEDED
        last = sandbox.kept()[-2:]
        assert {k.batch["user_identities"]["customer_id"] for k in last} == {"3", "21"}

    def test_a_source_that_cannot_be_read_fails_the_run_with_the_reason(self, sandbox, settings):
        settings.MPFEED_SOURCE_DATABASES = {}
        workspace = make_workspace(sandbox)
        job = SyncJob.objects.create(
            workspace=workspace, name="crm", mapping=make_mapping(workspace), source_kind=SyncJob.SourceKind.SQL,
            source_config={"database": "crm", "query": "select 1"},
        )  # fmt: skip
        run = run_job(job)
        assert run.status == SyncRun.Status.FAILED and "crm" in run.error, run.error
        # Settings that cannot work at all are refused before a run starts.
        job.source_config = {"database": "crm"}
        job.save()
        with pytest.raises(sync.SyncError, match="The source settings are not valid"):
            sync.start_run(job)


class TestPreview:
    def test_preview_shows_batches_and_refusals_without_sending(self, sandbox, tmp_path):
        rows = purchase_rows(6, users=2)
        rows[1]["amount"] = "lots"
        job = make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", rows))
        result = preview_job(job)
        assert result.errors == [] and result.records == 6
        assert len(result.batches) == 2  # grouped per user
        assert sum(len(b["events"]) for b in result.batches) == 5
        [rejected] = result.rejected
        assert rejected["ref"] == "o.csv:3" and "'lots' is not a number" in rejected["reason"]
        assert sandbox.requests_log() == []

    def test_preview_of_pasted_records_and_an_invalid_mapping(self):
        result = preview_records(MAPPING, [{"user_id": "u1", "ts": "2026-11-20T10:00:00Z", "id": "1"}, 7])
        assert len(result.batches) == 1 and result.rejected[0]["reason"] == "expected an object, got a number"
        bad = preview_records({"identities": {"customerid": "id"}}, [{}])
        assert bad.errors and "not an mParticle identity key" in bad.errors[0]

    def test_the_preview_command_prints_json(self, sandbox, tmp_path):
        workspace = make_workspace(sandbox)
        make_mapping(workspace)
        path = write_csv(tmp_path / "o.csv", purchase_rows(3))
        out = io.StringIO()
        call_command("preview", "--workspace", workspace.name, "--file", str(path), stdout=out)
        data = json.loads(out.getvalue())
        assert data["records"] == 3 and len(data["batches"]) == 3 and data["rejected"] == []


def test_fake_clock_is_shared(sandbox, tmp_path):
    # run_job with an explicit clock: waits observed, none real.
    clock = FakeClock()
    job = make_job(make_workspace(sandbox), write_csv(tmp_path / "o.csv", purchase_rows(3)))
    assert run_job(job, clock).status == SyncRun.Status.SUCCEEDED

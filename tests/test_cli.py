"""The headless commands: in-process with call_command, and end to end in real processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import requests
from django.core.management import CommandError, call_command

from feeds.models import Mapping, SyncRun, Workspace
from tests import processes
from tests.helpers import MAPPING, SANDBOX_KEY, SANDBOX_SECRET, free_port, purchase_rows, write_csv

ROOT = Path(__file__).resolve().parent.parent


def command(*args, **env) -> str:
    out = io.StringIO()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        call_command(*args, stdout=out)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out.getvalue()


@pytest.fixture
def mapping_file(tmp_path):
    path = tmp_path / "mapping.json"
    path.write_bytes(orjson.dumps(MAPPING))
    return path


@pytest.mark.django_db
class TestInProcess:
    def add(self, sandbox, name="Acme"):
        return command(
            "add_workspace",
            "--name",
            name,
            "--pod",
            "sandbox",
            "--endpoint-url",
            f"{sandbox.url}/v2",
            MPFEED_API_KEY=SANDBOX_KEY,
            MPFEED_API_SECRET=SANDBOX_SECRET,
        )

    def test_add_workspace_takes_credentials_from_the_environment(self, sandbox):
        out = self.add(sandbox)
        assert "Created workspace 'Acme'" in out and "credentials set" in out
        workspace = Workspace.objects.get(name="Acme")
        assert workspace.api_secret == SANDBOX_SECRET
        assert workspace.status == Workspace.Status.ACTIVE

    def test_add_workspace_without_credentials_and_no_terminal_fails(self, sandbox, monkeypatch):
        monkeypatch.delenv("MPFEED_API_KEY", raising=False)
        monkeypatch.delenv("MPFEED_API_SECRET", raising=False)
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        with pytest.raises(CommandError, match="Set MPFEED_API_KEY and MPFEED_API_SECRET"):
            call_command("add_workspace", "--name", "X", "--pod", "partner")
        assert not Workspace.objects.exists()

    def test_add_workspace_refuses_the_sandbox_without_url(self):
        with pytest.raises(CommandError, match="endpoint_url: The sandbox pod needs an endpoint URL"):
            command("add_workspace", "--name", "X", "--pod", "sandbox", "--no-credentials")

    def test_add_workspace_refuses_the_sandbox_when_not_allowed(self, settings):
        settings.MPFEED_ALLOW_SANDBOX = False
        with pytest.raises(CommandError, match="not allowed on this deployment"):
            command(
                "add_workspace", "--name", "X", "--pod", "sandbox", "--endpoint-url", "http://x/v2", "--no-credentials"
            )

    def test_load_mapping_versions_and_refuses_invalid_rules(self, sandbox, mapping_file, tmp_path):
        self.add(sandbox)
        assert "loaded (version 1)" in command("load_mapping", "--workspace", "Acme", str(mapping_file))
        assert "unchanged (version 1)" in command("load_mapping", "--workspace", "Acme", str(mapping_file))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"identities": {"customerid": "id"}}))
        with pytest.raises(CommandError, match="identities.customerid: not an mParticle identity key"):
            command("load_mapping", "--workspace", "Acme", str(bad))
        bad.write_text("{nope")
        with pytest.raises(CommandError, match="is not valid JSON"):
            command("load_mapping", "--workspace", "Acme", str(bad))
        assert Mapping.objects.get().version == 1

    def test_run_sync_inline_prints_one_json_line(self, sandbox, mapping_file, tmp_path):
        self.add(sandbox)
        command("load_mapping", "--workspace", "Acme", str(mapping_file))
        rows = purchase_rows(30, users=7)
        rows[3]["ts"] = "garbage"
        path = write_csv(tmp_path / "orders.csv", rows)
        out = command("run_sync", "--workspace", "Acme", "--file", str(path), "--inline")
        [line] = out.strip().splitlines()
        summary = json.loads(line)
        assert summary["status"] == "succeeded_with_rejects"
        assert summary["records_read"] == 30 and summary["records_rejected"] == 1
        assert summary["events_accepted"] == 29 == len(sandbox.events())
        assert SyncRun.objects.get(pk=summary["run"]).trigger == SyncRun.Trigger.CLI

    def test_run_sync_exits_non_zero_when_the_run_fails(self, sandbox, mapping_file, tmp_path, capsys):
        self.add(sandbox)
        command("load_mapping", "--workspace", "Acme", str(mapping_file))
        path = write_csv(tmp_path / "orders.csv", purchase_rows(3))
        Workspace.objects.filter(name="Acme").update(endpoint_url=f"{sandbox.url}/v2")
        workspace = Workspace.objects.get(name="Acme")
        workspace.set_credentials(SANDBOX_KEY, "not-the-secret")
        with pytest.raises(SystemExit) as exit_info:
            command("run_sync", "--workspace", "Acme", "--file", str(path), "--inline")
        assert exit_info.value.code == 1

    def test_a_latin1_pipe_file_is_read_with_delimiter_and_encoding_options(self, sandbox, mapping_file, tmp_path):
        self.add(sandbox)
        command("load_mapping", "--workspace", "Acme", str(mapping_file))
        rows = purchase_rows(4)
        rows[0]["first_name"] = "Zoë"
        rows[2]["amount"] = "dix"
        text = "|".join(rows[0]) + "\n" + "".join("|".join(r.values()) + "\n" for r in rows)
        path = tmp_path / "orders.csv"
        path.write_bytes(text.encode("latin-1"))
        args = ["--workspace", "Acme", "--file", str(path)]

        # The preview uses the same options, and shows the ids a sync sends.
        out = command("preview", *args, "--delimiter", "|", "--encoding", "latin-1")
        preview = json.loads(out)
        assert preview["batches"][0]["user_attributes"]["$firstname"] == "Zoë"
        assert [r["ref"] for r in preview["rejected"]] == ["orders.csv:4"]
        previewed_ids = {e["data"]["source_message_id"] for b in preview["batches"] for e in b["events"]}

        # Named wrongly, the accented line is refused for what it is (left to "auto", it is detected).
        with pytest.raises(SystemExit) as exit_info:
            command("run_sync", *args, "--delimiter", "|", "--encoding", "utf-8", "--inline", "--fail-on-rejects")
        assert exit_info.value.code == 1
        first = SyncRun.objects.latest("pk")
        assert "not valid utf-8" in first.rejects.get(ref="orders.csv:2").reason

        summary = json.loads(command("run_sync", *args, "--delimiter", "|", "--encoding", "latin-1", "--inline"))
        assert (summary["status"], summary["records_rejected"], summary["events_accepted"]) == (
            "succeeded_with_rejects", 1, 3,
        )  # fmt: skip
        sent = [e for e in sandbox.events() if e["data"]["source_message_id"] in previewed_ids]
        assert len(sent) == 3 + 2  # the first run sent the two lines it could read, the second all three
        lines = [json.loads(line) for line in command("rejects", "--run", str(summary["run"])).splitlines()]
        assert lines == [
            {
                "ref": "orders.csv:4",
                "stage": "mapping",
                "reason": "events[0].attributes.amount: 'dix' is not a number",
                "excerpt": lines[0]["excerpt"],
            }
        ]
        assert "dix" in lines[0]["excerpt"]

    def test_bad_file_options_are_refused_before_a_run_starts(self, sandbox, mapping_file, tmp_path):
        self.add(sandbox)
        command("load_mapping", "--workspace", "Acme", str(mapping_file))
        path = write_csv(tmp_path / "orders.csv", purchase_rows(2))
        with pytest.raises(CommandError, match="(?i)unknown encoding|not a known"):
            command("run_sync", "--workspace", "Acme", "--file", str(path), "--encoding", "klingon", "--inline")
        with pytest.raises(CommandError, match="one character"):
            command("run_sync", "--workspace", "Acme", "--file", str(path), "--delimiter", ";;", "--inline")
        assert not SyncRun.objects.exists()
        with pytest.raises(CommandError, match="No run #99"):
            command("rejects", "--run", "99")

    def test_run_sync_explains_a_missing_mapping(self, sandbox, tmp_path):
        self.add(sandbox)
        path = write_csv(tmp_path / "orders.csv", purchase_rows(3))
        with pytest.raises(CommandError, match="has no mapping named 'default'"):
            command("run_sync", "--workspace", "Acme", "--file", str(path), "--inline")


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def site_env(tmp_path):
    return processes.site_env(tmp_path / "site.sqlite3")


@pytest.mark.slow
def test_end_to_end_with_a_real_cluster_and_the_standalone_sandbox(site_env, tmp_path, mapping_file):
    """Fresh database, sandbox_api and qcluster as real processes, run_sync --wait; then the database file
    must hold the secret only as ciphertext."""
    port = free_port()
    procs = []
    try:
        processes.manage(site_env, "migrate", "--noinput", "-v", "0")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "sandbox_api",
                    "--port",
                    str(port),
                    "--rate-limit",
                    "150",
                    "--throttle-rate",
                    "0.2",
                    "--seed",
                    "4",
                ],
                cwd=ROOT,
                env={**site_env, "MPFEED_SANDBOX_CREDENTIALS": f"{SANDBOX_KEY}:{SANDBOX_SECRET}"},
            )
        )
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        out = processes.manage(
            site_env,
            "add_workspace",
            "--name",
            "E2E",
            "--pod",
            "sandbox",
            "--endpoint-url",
            f"http://127.0.0.1:{port}/v2",
            "--environment",
            "production",
            input_env={"MPFEED_API_KEY": SANDBOX_KEY, "MPFEED_API_SECRET": SANDBOX_SECRET},
        )
        assert SANDBOX_SECRET not in out.stdout + out.stderr
        processes.manage(site_env, "load_mapping", "--workspace", "E2E", str(mapping_file))
        rows = purchase_rows(1500, users=400)
        for i in range(0, 1500, 100):
            rows[i]["amount"] = "broken"
        data = write_csv(tmp_path / "orders.csv", rows)
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env=site_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        result = processes.manage(
            site_env, "run_sync", "--workspace", "E2E", "--file", str(data), "--wait", check=False, timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["status"] == "succeeded_with_rejects"
        assert summary["records_read"] == 1500 and summary["records_rejected"] == 15
        assert summary["events_accepted"] == 1485
        state = requests.get(f"http://127.0.0.1:{port}/_sandbox/state", timeout=5).json()
        assert state["kept_events"] == 1485 and state["duplicates"] == 0
        assert len(set(state["source_message_ids"])) == 1485
        assert state["requests_by_status"].get("429", 0) >= 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    cluster_log = procs[-1].stdout.read() if len(procs) > 1 and procs[-1].stdout else ""
    assert SANDBOX_SECRET not in cluster_log
    # The database (and its write-ahead log) holds the secret only as ciphertext.
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("site.sqlite3*"))
    assert b"E2E" in raw  # the search does see the file contents
    assert SANDBOX_SECRET.encode() not in raw


@pytest.mark.django_db
def test_load_mapping_shows_changed_sample_outputs_and_loads_them_only_when_accepted(sandbox, tmp_path):
    command(
        "add_workspace", "--name", "Acme", "--pod", "sandbox", "--endpoint-url", f"{sandbox.url}/v2",
        MPFEED_API_KEY=SANDBOX_KEY, MPFEED_API_SECRET=SANDBOX_SECRET,
    )  # fmt: skip
    record = {"id": "r1", "user_id": "u1", "plan": "pro", "ts": "2026-11-20T10:00:00Z", "sku": "A", "amount": "2.5"}
    doc = {**MAPPING, "samples": [{"name": "a purchase", "record": record, "expect": {}}]}
    path = tmp_path / "m.json"
    # A sample whose expectation is wrong is shown, and nothing is loaded.
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(CommandError, match=r"samples\[0\] \(a purchase\)"):
        command("load_mapping", "--workspace", "Acme", str(path))
    assert not Mapping.objects.exists()
    # Accepted: the current outputs become the expectations.
    assert "loaded (version 1)" in command("load_mapping", "--workspace", "Acme", "--accept-changes", str(path))
    stored = Mapping.objects.get()
    assert stored.rules["samples"][0]["expect"]["user_attributes"] == {"plan": "pro"}
    # An edit that changes what the stored samples produce is refused with the difference, then accepted.
    edited = {**stored.rules, "user_attributes": {"plan": {"field": "plan", "transform": ["upper"]}}}
    path.write_bytes(orjson.dumps(edited))
    with pytest.raises(CommandError) as error:
        command("load_mapping", "--workspace", "Acme", str(path))
    assert "user_attributes.plan" in str(error.value) and "'PRO'" in str(error.value).replace('"', "'")
    assert Mapping.objects.get().version == 1
    command("load_mapping", "--workspace", "Acme", "--accept-changes", str(path))
    stored = Mapping.objects.get()
    assert stored.version == 2 and stored.rules["samples"][0]["expect"]["user_attributes"] == {"plan": "PRO"}
    # What was accepted can be exported, and the export loads back as it is (no change, no refusal).
    exported = command("export_mapping", "--workspace", "Acme")
    assert json.loads(exported) == stored.rules
    path.write_text(exported)
    assert "unchanged" in command("load_mapping", "--workspace", "Acme", str(path)).lower()
    with pytest.raises(CommandError, match="no mapping named 'other'"):
        command("export_mapping", "--workspace", "Acme", "--name", "other")

"""Rules with one home, the same from every face: the words of feeds/words.py (the Events API client and an HTTP
source name a failed connection the same way; a file, an HTTP source and the mapping name a value's kind the same
way), the one truth table of record values (a rule of type "bool" and a condition read the same words), the one
hash of secret tokens (credential links and push inboxes), and the named sets of a run's statuses."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from feeds import datasheet
from feeds.mapping import compile_mapping
from feeds.mapping.conditions import compile_condition
from feeds.mapping.values import RecordError, as_bool, to_bool
from feeds.models import CredentialLink, SyncRun, token_hash
from feeds.mparticle.client import EventsClient
from feeds.sources import SourceError
from feeds.sources.files import FileSource
from feeds.sources.http import HTTPSource
from feeds.words import connection_message, json_excerpt, json_type, kind, truth
from mpfeed_site.settings import envbool
from sandbox.checks import validate_batch
from tests.helpers import free_port, make_job, make_workspace

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "value, json_name, words",
    [
        (None, "null", "null"),
        (True, "boolean", "a boolean"),
        (3, "number", "a number"),
        (2.5, "number", "a number"),
        (Decimal("1.5"), "number", "a number"),
        ("x", "string", "text"),
        ([1], "array", "a list"),
        ((1,), "array", "a list"),
        ({"a": 1}, "object", "an object"),
        (b"x", "bytes", "a bytes"),
    ],
)
def test_a_value_has_one_json_name_and_one_name_in_words(value, json_name, words):
    assert json_type(value) == json_name
    assert kind(value) == words


def test_a_long_value_is_cut_alike_everywhere_it_is_shown():
    long = {"text": "x" * 500}
    assert len(json_excerpt(long, 80)) <= 80 and json_excerpt(long, 80).endswith("…")
    assert json_excerpt({"a": 1}, 80) == '{"a":1}' and json_excerpt(object, 80) == repr(object)
    assert datasheet.show(long) == json_excerpt(long, 80)
    [problem] = [p for p in validate_batch({"environment": "x" * 100, "mpid": 1}) if p[0] == "environment"]
    assert problem[1].endswith(json_excerpt("x" * 100, 60))


def test_the_client_and_an_http_source_name_a_refused_connection_alike(settings):
    url = f"http://127.0.0.1:{free_port()}"
    answer = EventsClient(base_url=url + "/v2", api_key="k", api_secret="s").upload({"events": []})

    settings.MPFEED_HTTP_SOURCE_HOSTS = ["127.0.0.1"]
    settings.MPFEED_HTTP_SOURCE_ATTEMPTS = 1
    source = HTTPSource.from_config({"url": url + "/v1/events", "records_path": "data"}, None)
    with pytest.raises(SourceError) as raised:
        list(source.read())

    assert answer.error == "the connection was refused"
    assert str(raised.value).endswith("last: the connection was refused")


def test_a_refusal_message_names_neither_url_nor_credentials():
    error = ConnectionError("HTTPConnectionPool(host='h', port=1): url /v2?key=secret: [Errno 111] Connection refused")
    assert connection_message(error) == "the connection was refused"
    assert connection_message(ConnectionError("something else at http://user:pw@h/")) == (
        "the connection failed (ConnectionError)"
    )


def test_a_file_and_the_mapping_name_a_record_that_is_not_an_object_alike(tmp_path):
    path = tmp_path / "records.ndjson"
    path.write_text('[1, 2]\n"text"\n')
    listed, text = FileSource.from_config({"path": str(path)}).read(None)
    converter = compile_mapping(
        {"identities": {"customer_id": "id"}, "events": [{"event_type": "custom_event", "name": "x"}]}
    )
    for item, record in [(listed, [1, 2]), (text, "text")]:
        with pytest.raises(RecordError) as raised:
            converter.convert(record, "r")
        assert item.error == f"expected a JSON object, got {kind(record)}"
        assert str(raised.value) == f"expected an object, got {kind(record)}"


def test_the_sandbox_names_a_value_by_its_json_name():
    problems = validate_batch({"environment": "production", "mpid": 1, "events": "x"})
    assert ("events", f"value must be an array, got {json_type('x')}") in problems


WORDS = ["true", "True", " yes ", "y", "t", "1", "on", "false", "No", "n", "f", "0", "off", 1, 0, 1.0, True, False]
NOT_WORDS = ["maybe", "", "2", 2, 0.5, None, [], {}]


@pytest.mark.parametrize("value", WORDS + NOT_WORDS)
def test_a_bool_rule_and_a_condition_read_one_truth_table(value):
    is_true = compile_condition({"field": "f", "equals": True})
    is_false = compile_condition({"field": "f", "equals": False})
    try:
        as_rule = to_bool(value, "f")
    except RecordError:
        as_rule = None
    as_condition = True if is_true({"f": value}) else False if is_false({"f": value}) else None
    assert as_rule == as_condition == as_bool(value)
    assert (as_rule is None) == (value in NOT_WORDS)


@pytest.mark.parametrize("word", [w for w in WORDS + NOT_WORDS if isinstance(w, str) and w])
def test_a_setting_reads_the_words_of_a_record(monkeypatch, word):
    monkeypatch.setenv("MPFEED_TEST_FLAG", word)
    try:
        as_setting = envbool("MPFEED_TEST_FLAG", "false")
    except ImproperlyConfigured:
        as_setting = None
    assert as_setting == as_bool(word) == truth(word)


# ------------------------------------------------------------------------------------------------ the models


@pytest.mark.django_db
def test_a_credential_link_and_a_push_inbox_keep_their_tokens_hashed_alike(tmp_path):
    workspace = make_workspace()
    link, link_token = CredentialLink.issue(workspace)
    job = make_job(workspace, tmp_path / "orders.csv")
    inbox_token = job.new_inbox_token()

    assert link.token_hash == token_hash(link_token) and link_token not in link.token_hash
    assert job.inbox_token_hash == token_hash(inbox_token) and inbox_token not in job.inbox_token_hash
    assert CredentialLink.find(link_token) == link and job.inbox_token_matches(inbox_token)
    assert not job.inbox_token_matches(link_token)


def test_the_one_run_per_job_constraint_holds_the_active_statuses():
    [constraint] = SyncRun._meta.constraints
    [(lookup, statuses)] = constraint.condition.children
    assert lookup == "status__in" and statuses == list(SyncRun.ACTIVE_STATUSES)


def test_the_named_status_sets_fit_together():
    Status = SyncRun.Status
    assert set(SyncRun.ACTIVE_STATUSES) | set(SyncRun.ENDED_STATUSES) == set(Status)
    assert set(SyncRun.ENDED_STATUSES) == {*SyncRun.FINISHED_STATUSES, Status.CANCELLED}
    assert set(SyncRun.WORKING_STATUSES) == set(SyncRun.ACTIVE_STATUSES) - {Status.BLOCKED}
    assert set(SyncRun.STARTED_STATUSES) == set(SyncRun.WORKING_STATUSES) - {Status.QUEUED}
    assert set(SyncRun.FINISHED_STATUSES) == {*SyncRun.SUCCEEDED_STATUSES, Status.FAILED}
    assert set(SyncRun.STOPPED_STATUSES) == {Status.FAILED, Status.BLOCKED}


# ------------------------------------------------------------------------------------------------ the homes
PURE_MODULES = [
    "feeds.words",
    "feeds.mapping",
    *(f"feeds.mparticle.{p.stem}" for p in sorted((ROOT / "feeds" / "mparticle").glob("*.py"))),
    *(f"sandbox.{p.stem}" for p in sorted((ROOT / "sandbox").glob("*.py")) if p.stem != "__main__"),
]


def test_the_shared_helpers_the_api_client_and_the_sandbox_import_no_django():
    code = (
        f"import importlib, sys\nfor name in {PURE_MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_product_imports_the_sandbox_only_where_it_serves_it():
    serving = {"feeds/management/commands/serve.py", "feeds/management/commands/sandbox_api.py"}
    importers = set()
    for path in (ROOT / "feeds").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] == "sandbox" for name in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == serving

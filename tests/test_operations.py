"""What operators watch: /metrics in Prometheus's text format (parsed here by Prometheus's own client library)
for staff or a token, and /health for the database, the broker and the clusters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from feeds import operations
from feeds.models import Delivery, Sender, SyncRun, WorkspacePace
from tests.helpers import make_job, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db


def families(response) -> dict[str, dict[tuple, float]]:
    assert response["Content-Type"] == operations.CONTENT_TYPE
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_are_for_staff_or_a_token(client, bob, alice, settings):
    assert client.get("/metrics").status_code == 401
    client.force_login(bob)
    assert client.get("/metrics").status_code == 403
    client.logout()
    settings.MPFEED_METRICS_TOKEN = "scrape-token-0123456789"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answer = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789")
    assert answer.status_code == 200 and "mpfeed_senders_alive" in answer.content.decode()
    client.force_login(alice)
    assert client.get("/metrics").status_code == 200


def test_metrics_count_deliveries_pace_429s_rejects_and_requests_in_flight(staff, sandbox, tmp_path):
    sandbox.configure(rate_limit=150)
    workspace = make_workspace(sandbox)
    rows = purchase_rows(300)
    rows[3]["amount"] = "broken"
    run = run_job(make_job(workspace, write_csv(tmp_path / "orders.csv", rows)))
    assert run.status == SyncRun.Status.SUCCEEDED_WITH_REJECTS
    # One delivery still to send, an hour old.
    waiting = run.deliveries.first()
    Delivery.objects.filter(pk=waiting.pk).update(
        state=Delivery.State.PENDING, created_at=timezone.now() - timedelta(hours=1)
    )
    Sender.objects.create(host="worker-1", pid=42, lanes=3, in_flight=2)
    Sender.objects.create(host="worker-2", pid=7, heartbeat_at=timezone.now() - timedelta(minutes=5))  # dead

    m = families(staff.get("/metrics"))
    ws = (("workspace", workspace.slug),)
    states = {dict(k)["state"]: v for k, v in m["mpfeed_deliveries"].items()}
    assert states["pending"] == 1
    assert states["accepted"] == run.deliveries.filter(state=Delivery.State.ACCEPTED).count() >= 1
    assert 3599 <= m["mpfeed_oldest_pending_delivery_seconds"][ws] <= 3700
    assert m["mpfeed_records_rejected_total"][ws] == 1
    pace = WorkspacePace.objects.get(workspace=workspace)
    assert (
        m["mpfeed_throttled_total"][ws] == pace.throttled_total
        and m["mpfeed_requests_total"][ws] == pace.requests_total
    )
    assert m["mpfeed_learned_limit_batches_per_second"][ws] == pytest.approx(pace.limit, abs=0.001)
    assert m["mpfeed_pace_batches_per_second"][ws] == pytest.approx(pace.rate, abs=0.001)
    assert m["mpfeed_budget_batches_per_second"][ws] == 270
    assert m["mpfeed_senders_alive"][()] == 1
    assert m["mpfeed_requests_in_flight"] == {(("sender", "worker-1:42"),): 2}


def test_label_values_are_escaped():
    metric = operations.Metric("x", "gauge", "help")
    metric.add(1, name='a "quoted"\\ name\nnext')
    [*_, line] = metric.render()
    assert line == 'x{name="a \\"quoted\\"\\\\ name\\nnext"} 1'
    [family] = text_string_to_metric_families("\n".join(metric.render()) + "\n")
    assert family.samples[0].labels["name"] == 'a "quoted"\\ name\nnext'


def test_health_says_whether_database_broker_and_a_cluster_are_alive(client):
    answer = client.get("/health")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "failing" and body["database"]["ok"] and body["broker"]["ok"]
    assert body["cluster"] == {"ok": False, "detail": "0 sending process(es) beating, 0 cluster(s) reporting"}
    sender = Sender.objects.create(host="worker-1", pid=42)
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    # One that stopped, or went quiet for half a minute, no longer counts.
    Sender.objects.filter(pk=sender.pk).update(stopped_at=timezone.now())
    assert client.get("/health").status_code == 503

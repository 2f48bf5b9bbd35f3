"""Migrations that change data do what they say, on a database that has data."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(target: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def test_accepted_attempts_get_their_delivery_events_when_the_field_is_added():
    old = migrate([("feeds", "0001_initial")])
    Workspace, Mapping, SyncJob = (old.get_model("feeds", n) for n in ("Workspace", "Mapping", "SyncJob"))
    SyncRun, Delivery, Attempt = (old.get_model("feeds", n) for n in ("SyncRun", "Delivery", "DeliveryAttempt"))
    workspace = Workspace.objects.create(name="Old", slug="old")
    mapping = Mapping.objects.create(workspace=workspace, rules={})
    job = SyncJob.objects.create(workspace=workspace, mapping=mapping, name="j")
    run = SyncRun.objects.create(job=job, workspace=workspace, mapping_version=1, mapping_rules={})
    delivery = Delivery.objects.create(run=run, workspace=workspace, sequence=1, event_count=7)
    accepted = Attempt.objects.create(delivery=delivery, outcome="accepted", status=202)
    throttled = Attempt.objects.create(delivery=delivery, outcome="throttled", status=429)

    new = migrate([("feeds", "0002_attempt_events_accepted")])
    Attempt = new.get_model("feeds", "DeliveryAttempt")
    assert Attempt.objects.get(pk=accepted.pk).events_accepted == 7
    assert Attempt.objects.get(pk=throttled.pk).events_accepted == 0
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

"""The per-workspace pace (feeds.pacing): GCRA spacing with a burst allowance, AIMD on answers. A fake clock
makes every wait free and exact."""

from __future__ import annotations

import random

import pytest
from django.utils import timezone

from feeds import pacing, sync
from feeds.models import SyncRun, WorkspacePace
from feeds.mparticle.client import Answer, Outcome
from feeds.pacing import BURST_SECONDS, HIGH_USE_PERCENT, Pacer, Pacing, target_rate
from tests.helpers import FakeClock, make_job, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db


def pacer_for(workspace, clock: FakeClock) -> Pacer:
    return Pacer(workspace, Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1)))


def accepted(used: int | None = None) -> Answer:
    return Answer(outcome=Outcome.ACCEPTED, status=202, latency=0.001, rate_limit_used=used)


def throttled(retry_after: float = 1.0, scope: str = "workspace") -> Answer:
    return Answer(outcome=Outcome.THROTTLED, status=429, latency=0.001, retry_after=retry_after, rate_limit_scope=scope)


def rate_of(workspace) -> float:
    return WorkspacePace.objects.get(workspace=workspace).rate


def send_for(pacer: Pacer, clock: FakeClock, seconds: float, batches: int) -> list[tuple[float, int]]:
    """Send requests of `batches` as fast as the pace lets, for `seconds` of simulated time."""
    sent = []
    end = clock.now + seconds
    while clock.now < end:
        clock.sleep(pacer.reserve(batches))
        sent.append((clock.now, batches))
    return sent


def test_reserve_keeps_a_long_run_at_the_target_rate(settings):
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    assert target == pytest.approx(100 * settings.MPFEED_PACE_TARGET)
    clock = FakeClock()
    start = clock.now
    sent = send_for(pacer_for(workspace, clock), clock, 300, batches=25)

    # After the initial burst, requests are spaced by exactly their cost: never faster than the target.
    paused = [i for i, (at, _) in enumerate(sent) if at > start]
    first = paused[0]
    steady = sum(n for _, n in sent[first + 1 :]) / (sent[-1][0] - sent[first][0])
    assert 0.95 * target <= steady <= target * (1 + 1e-9)
    # Over the whole window, including the burst, at most one burst's worth above the target.
    total = sum(n for _, n in sent)
    elapsed = sent[-1][0] - start
    assert total <= target * (elapsed + BURST_SECONDS) + 25
    assert total / elapsed >= 0.95 * target
    # No window of any length ever holds more than its budget plus the burst allowance.
    for i in range(0, len(sent), 37):
        for j in range(i, len(sent), 53):
            in_window = sum(n for _, n in sent[i : j + 1])
            assert in_window <= target * (sent[j][0] - sent[i][0] + BURST_SECONDS) + 25 + 1e-6


def test_reserve_allows_a_burst_then_spaces_requests():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    # 8 requests of 10 batches fit into 0.9 s of budget at 98 batches/s; the 9th has to wait for its slot.
    assert [pacer.reserve(10) for _ in range(8)] == [0.0] * 8
    assert pacer.reserve(10) == pytest.approx(90 / target - BURST_SECONDS)
    # An idle second refills the allowance.
    clock.sleep(5)
    assert pacer.reserve(10) == 0.0


def test_a_429_halves_the_pace_and_holds_every_worker_until_the_wait_is_over():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    first, second = pacer_for(workspace, clock), pacer_for(workspace, clock)
    first.reserve(10)
    first.observe(throttled(retry_after=3), wait=3.2)
    assert rate_of(workspace) == pytest.approx(target / 2)
    # Another worker sending to the same workspace waits out the 429 too.
    assert second.reserve(10) >= 3.2
    # A second 429 halves again, down to the pace's floor at most.
    first.observe(throttled(), wait=1)
    assert rate_of(workspace) == pytest.approx(max(target / 4, target * getattr(pacing, "FLOOR_SHARE", 0)))


def test_a_high_reported_use_slows_the_pace_before_a_429():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    pacer = pacer_for(workspace, FakeClock())
    pacer.observe(accepted(used=HIGH_USE_PERCENT + 2))
    once = rate_of(workspace)
    assert target / 2 < once < target  # a gentle cut, much less than a 429's
    pacer.observe(accepted(used=HIGH_USE_PERCENT))
    assert rate_of(workspace) < once
    pacer.observe(accepted(used=HIGH_USE_PERCENT - 1))
    assert rate_of(workspace) > once * 0.99


def climb(pacer: Pacer, workspace, answers: int) -> list[float]:
    rates = []
    for _ in range(answers):
        pacer.observe(accepted(used=50))
        rates.append(rate_of(workspace))
    return rates


def test_clean_answers_climb_back_to_the_target_and_no_further():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    pacer = pacer_for(workspace, FakeClock())
    pacer.observe(throttled(), wait=1)
    rates = climb(pacer, workspace, 40)
    assert target / 2 < rates[0] < target
    # Step by step (additive increase), up to the target and never above it.
    assert all(a <= b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(target) and max(rates) <= target


def test_an_acceleration_429_eases_off_and_climbs_back_slowly_for_a_minute():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    pacer.observe(throttled(scope="acceleration"), wait=1)
    eased = rate_of(workspace)
    assert target / 2 < eased < target  # eased off, not halved
    [gentle] = climb(pacer, workspace, 1)
    gentle_step = gentle - eased
    # An ordinary 429 is followed by the ordinary, faster climb.
    other = make_workspace(name="Other", rate_limit=100)
    other_pacer = pacer_for(other, clock)
    other_pacer.observe(throttled(), wait=1)
    halved = rate_of(other)
    [after] = climb(other_pacer, other, 1)
    assert 0 < gentle_step < after - halved
    # A minute later the accelerated workspace climbs at the ordinary speed again.
    clock.sleep(61)
    [normal] = climb(pacer, workspace, 1)
    assert normal - gentle > gentle_step


def test_workspaces_have_independent_paces():
    throttled_one = make_workspace(name="Throttled", rate_limit=100)
    other = make_workspace(name="Other", rate_limit=50)
    clock = FakeClock()
    pacer_for(throttled_one, clock).reserve(10)
    pacer_for(throttled_one, clock).observe(throttled(retry_after=30), wait=30)
    other_pacer = pacer_for(other, clock)
    assert other_pacer.reserve(10) == 0.0
    other_pacer.observe(accepted())
    assert rate_of(other) == pytest.approx(target_rate(other))
    assert rate_of(throttled_one) == pytest.approx(target_rate(throttled_one) / 2)
    assert pacer_for(throttled_one, clock).reserve(10) >= 30


def test_pacing_can_be_switched_off(settings):
    settings.MPFEED_PACING = False
    workspace = make_workspace(rate_limit=1)
    pacer = pacer_for(workspace, FakeClock())
    assert [pacer.reserve(100) for _ in range(5)] == [0.0] * 5
    pacer.observe(throttled(retry_after=60), wait=60)
    assert pacer.reserve(100) == 0.0
    assert not WorkspacePace.objects.exists()


def test_a_request_larger_than_the_burst_goes_once_the_pace_is_idle():
    # At 9.8 batches/s a 100-batch request costs 10.2 s, more than the burst allowance and more than
    # MPFEED_MAX_INLINE_WAIT. It goes at once on an idle pace (mParticle's bucket lets a request larger
    # than itself through when full, leaving it in debt), and the next request pays for it.
    workspace = make_workspace(rate_limit=10)
    cost = 100 / target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    assert pacer.reserve(100) == 0.0
    assert pacer.reserve(100) == pytest.approx(cost)
    clock.sleep(cost)
    # A small request after them goes as soon as it fits into the burst allowance again.
    assert pacer.reserve(1) == pytest.approx(cost + 1 / target_rate(workspace) - BURST_SECONDS)


def test_a_slow_workspace_is_not_starved_by_its_own_reservations(sandbox, tmp_path, settings):
    # A request that has to wait longer than a worker holds on gives the worker back; its reservation must
    # not stay behind, or the resumed run finds its own reservation in the way and waits again, forever.
    settings.MPFEED_CHUNK_SIZE = 100
    clock = FakeClock()
    workspace = make_workspace(sandbox, rate_limit=10)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(300)))
    run = sync.start_run(job)
    fake = Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1))
    waits = 0
    for _ in range(20):
        run = sync.process_run(run.pk, pacing=fake)
        if run.status != SyncRun.Status.WAITING:
            break
        waits += 1
        assert run.error.startswith("Pacing: waiting for this workspace's rate budget until ")
        clock.sleep((run.resume_at - timezone.now()).total_seconds())
        SyncRun.objects.filter(pk=run.pk).update(resume_at=timezone.now())
    assert run.status == SyncRun.Status.SUCCEEDED, (run.status, run.error)
    assert waits >= 1  # the second and third requests had to wait for their turn, without holding the worker
    assert len({e["data"]["source_message_id"] for e in sandbox.events()}) == 300
    assert sandbox.duplicates() == []


def test_sending_for_a_minute_at_the_limit_stays_under_it(sandbox, tmp_path, settings):
    # 16,200 users = 60 s of mParticle's default 270 batches/s, as 162 requests of 100 batches.
    settings.MPFEED_CHUNK_SIZE = 2000
    clock = FakeClock()
    sandbox.configure(rate_limit=270)
    sandbox._clock = clock.monotonic  # the sandbox's bucket refills on the same fake clock
    workspace = make_workspace(sandbox, rate_limit=270)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(16_200)))
    start = clock.now
    run = run_job(job, clock)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    elapsed = clock.now - start
    log = sandbox.requests_log()
    assert all(entry.batches == 100 for entry in log)
    throttled_share = sum(entry.status == 429 for entry in log) / len(log)
    assert throttled_share <= 0.02
    assert len(sandbox.kept()) == 16_200
    assert 58 <= elapsed <= 63
    assert 16_200 / elapsed >= 0.95 * 270

"""The per-workspace pace (feeds.pacing): GCRA spacing with a burst allowance, AIMD on answers. A fake clock
makes every wait free and exact."""

from __future__ import annotations

import random

import pytest
from django.utils import timezone

from feeds import pacing, sync
from feeds.models import SyncRun, Workspace, WorkspacePace
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


def pace_of(workspace) -> WorkspacePace:
    return WorkspacePace.objects.get(workspace=workspace)


def rate_of(workspace) -> float:
    return pace_of(workspace).rate


def send_for(pacer: Pacer, clock: FakeClock, seconds: float, batches: int) -> list[tuple[float, int]]:
    """Send requests of `batches` as fast as the pace lets, for `seconds` of simulated time."""
    sent = []
    end = clock.now + seconds
    while clock.now < end:
        clock.sleep(pacer.reserve(batches).wait)
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
    assert [pacer.reserve(10).wait for _ in range(8)] == [0.0] * 8
    assert pacer.reserve(10).wait == pytest.approx(90 / target - BURST_SECONDS)
    # An idle second refills the allowance, and the first request after it is quiet: its answer reads the limit.
    clock.sleep(5)
    reservation = pacer.reserve(10)
    assert reservation.wait == 0.0 and reservation.quiet


def test_a_429_cuts_the_pace_and_holds_every_sender_until_the_wait_is_over():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    first, second = pacer_for(workspace, clock), pacer_for(workspace, clock)
    reservation = first.reserve(10)
    first.observe(throttled(retry_after=3), batches=10, wait=3.2, reservation=reservation)
    cut = rate_of(workspace)
    assert target * 0.6 < cut < target * 0.9
    assert pace_of(workspace).limit < target and pace_of(workspace).throttled_total == 1
    # Another sender to the same workspace waits out the 429 too.
    assert second.reserve(10).wait >= 3.2
    # A 429 of a request reserved before the first one was answered teaches nothing new: no second cut.
    first.observe(throttled(), batches=10, wait=1, reservation=reservation)
    assert rate_of(workspace) == pytest.approx(cut)
    # One reserved since, within seconds: still over the limit, a harder cut.
    clock.sleep(4)
    later = second.reserve(10)
    second.observe(throttled(), batches=10, wait=1, reservation=later)
    assert rate_of(workspace) < cut * 0.8


def test_a_high_reported_use_slows_the_pace_before_a_429():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    pacer.observe(accepted(used=50), batches=10)
    clock.sleep(0.5)
    pacer.observe(accepted(used=HIGH_USE_PERCENT + 2), batches=10)
    once = rate_of(workspace)
    assert target / 2 < once < target  # a gentle cut, much less than a 429's
    clock.sleep(0.5)
    pacer.observe(accepted(used=HIGH_USE_PERCENT), batches=10)
    assert rate_of(workspace) < once
    clock.sleep(0.5)
    pacer.observe(accepted(used=HIGH_USE_PERCENT - 10), batches=10)
    assert rate_of(workspace) > once * 0.99


def climb(pacer: Pacer, workspace, clock: FakeClock, answers: int, every: float = 0.25) -> list[float]:
    rates = []
    for _ in range(answers):
        clock.sleep(every)
        pacer.observe(accepted(used=50), batches=10)
        rates.append(rate_of(workspace))
    return rates


def test_clean_answers_climb_back_to_the_learned_limit_and_no_further():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    pacer.observe(throttled(), batches=10, wait=1)
    limit = pace_of(workspace).limit
    assert limit < target
    rates = climb(pacer, workspace, clock, 40, every=0.05)
    assert target / 2 < rates[0] < limit
    # Step by step, up to the learned limit; no probing above it during the hold that follows a 429.
    assert all(a <= b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(limit) and max(rates) <= limit


def test_without_readings_the_pace_probes_above_the_learned_limit_after_a_hold():
    workspace = make_workspace(rate_limit=100)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    pacer.observe(throttled(), batches=10, wait=1)
    limit = pace_of(workspace).limit
    # After the hold the limit follows a probe that meets no 429, up to the configured budget.
    rates = climb(pacer, workspace, clock, 400)
    assert max(rates) > limit * 1.1
    assert rates[-1] == pytest.approx(target_rate(workspace))


def test_an_acceleration_429_eases_off_and_climbs_back_slowly_for_a_minute():
    workspace = make_workspace(rate_limit=100)
    target = target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    pacer.observe(throttled(scope="acceleration"), batches=10, wait=1)
    eased = rate_of(workspace)
    assert target / 2 < eased < target  # eased off, not halved
    assert pace_of(workspace).limit == pytest.approx(target)  # the limit itself is not in doubt
    [gentle] = climb(pacer, workspace, clock, 1)
    gentle_step = gentle - eased
    # An ordinary 429 is followed by the ordinary, faster climb.
    other = make_workspace(name="Other", rate_limit=100)
    other_pacer = pacer_for(other, clock)
    other_pacer.observe(throttled(), batches=10, wait=1)
    cut = rate_of(other)
    clock.sleep(0.25)
    other_pacer.observe(accepted(used=50), batches=10)
    assert 0 < gentle_step < rate_of(other) - cut
    # A minute later the accelerated workspace climbs at the ordinary speed again.
    clock.sleep(61)
    WorkspacePace.objects.filter(workspace=workspace).update(rate=eased, observed_at=clock.now)
    [normal] = climb(pacer, workspace, clock, 1)
    assert normal - eased > gentle_step * 2


def test_a_quiet_request_reads_the_limit_from_the_reported_use():
    # 100 batches sent into a quiet second used 74 % of it: the limit is about 135, though the budget says 270.
    workspace = make_workspace(rate_limit=270)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    reservation = pacer.reserve(100)
    assert reservation.quiet
    pacer.observe(accepted(used=74), batches=100, reservation=reservation)
    pace = pace_of(workspace)
    assert 130 <= pace.limit <= 135 and pace.rate <= pace.limit
    assert pace.learned_from == "read from mParticle's answers"
    # A request that is not quiet does not read it.
    busy = pacer.reserve(100)
    assert not busy.quiet
    pacer.observe(accepted(used=20), batches=100, reservation=busy)
    assert pace_of(workspace).limit == pytest.approx(pace.limit)
    # A 100 % use says only that the request used it all: the limit is at most the request's size.
    clock.sleep(5)
    quiet = pacer.reserve(100)
    pacer.observe(accepted(used=100), batches=100, reservation=quiet)
    assert pace_of(workspace).limit == pytest.approx(99) and pace_of(workspace).reading == pytest.approx(pace.reading)


def test_workspaces_have_independent_paces():
    throttled_one = make_workspace(name="Throttled", rate_limit=100)
    other = make_workspace(name="Other", rate_limit=50)
    clock = FakeClock()
    pacer_for(throttled_one, clock).reserve(10)
    pacer_for(throttled_one, clock).observe(throttled(retry_after=30), batches=10, wait=30)
    other_pacer = pacer_for(other, clock)
    assert other_pacer.reserve(10).wait == 0.0
    other_pacer.observe(accepted(), batches=10)
    assert rate_of(other) == pytest.approx(target_rate(other))
    assert rate_of(throttled_one) < target_rate(throttled_one)
    assert pacer_for(throttled_one, clock).reserve(10).wait >= 30


def test_what_was_learned_is_kept_for_the_next_run_and_follows_a_new_budget():
    workspace = make_workspace(rate_limit=270)
    clock = FakeClock()
    reservation = pacer_for(workspace, clock).reserve(100)
    pacer_for(workspace, clock).observe(accepted(used=74), batches=100, reservation=reservation)
    learned = pace_of(workspace).limit
    # A new pacer (a new run, another process) starts from the learned limit, not from the budget.
    clock.sleep(3600)
    fresh = pacer_for(workspace, clock)
    fresh.reserve(10)
    assert fresh.limit == pytest.approx(learned) and rate_of(workspace) <= learned
    # Staff lower the budget below it: the pace follows (senders read the budget again every few seconds).
    Workspace.objects.filter(pk=workspace.pk).update(rate_limit=50)
    fresh._budget_read -= pacing.BUDGET_FRESH_SECONDS
    fresh.reserve(10)
    assert rate_of(workspace) <= 50 and pace_of(workspace).limit <= 50


def test_pacing_can_be_switched_off(settings):
    settings.MPFEED_PACING = False
    workspace = make_workspace(rate_limit=1)
    pacer = pacer_for(workspace, FakeClock())
    assert [pacer.reserve(100).wait for _ in range(5)] == [0.0] * 5
    pacer.observe(throttled(retry_after=60), batches=100, wait=60)
    assert pacer.reserve(100).wait == 0.0
    assert not WorkspacePace.objects.exists()


def test_a_request_larger_than_the_burst_goes_once_the_pace_is_idle():
    # At 9.8 batches/s a 100-batch request costs 10.2 s, more than the burst allowance and more than
    # MPFEED_MAX_INLINE_WAIT. It goes at once on an idle pace (mParticle's bucket lets a request larger
    # than itself through when full, leaving it in debt), and the next request pays for it.
    workspace = make_workspace(rate_limit=10)
    cost = 100 / target_rate(workspace)
    clock = FakeClock()
    pacer = pacer_for(workspace, clock)
    assert pacer.reserve(100).wait == 0.0
    assert pacer.reserve(100).wait == pytest.approx(cost)
    clock.sleep(cost)
    # A small request after them goes as soon as it fits into the burst allowance again.
    assert pacer.reserve(1).wait == pytest.approx(cost + 1 / target_rate(workspace) - BURST_SECONDS)


def test_a_slow_workspace_is_not_starved_by_its_own_reservations(sandbox, tmp_path, settings):
    # A request that has to wait longer than a worker holds on gives the worker back; its reservation must
    # not stay behind, or the resumed run finds its own reservation in the way and waits again, forever.
    settings.MPFEED_CHUNK_SIZE = 100
    settings.MPFEED_GROUP_WINDOW_RECORDS = 100  # deliveries every 100 records
    settings.MPFEED_MAX_INLINE_WAIT = 0.5  # shorter than a request's share of the budget (8 batches: 0.8 s)
    clock = FakeClock()
    workspace = make_workspace(sandbox, rate_limit=10)
    job = make_job(workspace, write_csv(tmp_path / "orders.csv", purchase_rows(300)))
    run = sync.start_run(job)
    fake = Pacing(sleep=clock.sleep, clock=clock.time, rand=random.Random(1))
    waits = 0
    for _ in range(100):
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
    settings.MPFEED_GROUP_WINDOW_RECORDS = 2000  # deliveries every 2000 records
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

"""The pace learns the limit the server really enforces (feeds.mparticle.pace), simulated in virtual time against
models of a limiter (sandbox.pace_sim): a token bucket of one second, as the sandbox and most limiters
have, and a one-second sliding window. Two senders share one pace, as two worker processes sending to one
workspace do; requests take 80 ms. Shares are of what the true limit allowed over the whole time."""

from __future__ import annotations

import pytest

from feeds.mparticle import pace
from sandbox.pace_sim import simulate


def constant(limit: float):
    return lambda t: limit


def dropping(high: float, low: float, start: float, end: float):
    return lambda t: low if start <= t < end else high


def test_at_the_budget_nothing_is_lost_and_nothing_is_throttled():
    result, state = simulate(budget=270, limit=constant(270), seconds=60)
    assert result.throttled == 0
    assert result.share >= 0.97
    assert state.limit == pytest.approx(270 * 0.98, rel=0.02)


@pytest.mark.parametrize("seconds", [60, 120])
def test_a_limit_far_below_the_budget_is_read_from_the_reported_use(seconds):
    # The budget says 270; the server enforces 135 and says how much of it each request used.
    result, state = simulate(budget=270, limit=constant(135), seconds=seconds)
    assert result.share >= 0.90
    assert result.throttled_share <= 0.05
    assert 125 <= state.limit <= 135


def test_without_the_reported_use_the_limit_is_learned_from_429s():
    result, state = simulate(budget=270, limit=constant(135), seconds=120, header=False)
    assert result.share >= 0.85
    assert result.throttled_share <= 0.06
    assert 100 <= state.limit <= 150


@pytest.mark.parametrize("header", [True, False], ids=["reported-use", "429s-only"])
def test_a_limit_that_drops_for_a_minute_and_comes_back_is_followed(header):
    result, state = simulate(budget=270, limit=dropping(270, 100, 60, 120), seconds=180, header=header)
    assert result.share >= 0.85
    assert result.throttled_share <= 0.05
    # Back at the budget by the end.
    assert state.rate >= 0.85 * 270


def test_what_was_learned_carries_over_to_the_next_run():
    first, state = simulate(budget=270, limit=constant(135), seconds=60)
    assert first.throttled >= 1
    # The next run starts from the learned limit (an hour later, as feeds.pacing keeps it in the database).
    shifted = pace.PaceState(**{**state.__dict__, "next_at": 0.0, "last_send_at": 0.0, "read_at": 0.0})
    second, _ = simulate(budget=270, limit=constant(135), seconds=60, state=shifted)
    assert second.throttled <= 1
    assert second.share >= 0.93


def test_a_small_limit_with_requests_sized_to_it_is_used_fully():
    # A fleet workspace: 50 batches/s, requests of 44 batches (what a run packs for such a workspace).
    result, _ = simulate(budget=50, limit=constant(50), seconds=100, batches=44, senders=1)
    assert result.throttled == 0
    assert result.share >= 0.95


def test_a_sliding_window_limiter_costs_throughput_but_no_storm_of_429s():
    # A one-second window lets through less than a bucket does with large requests: the pace learns to use
    # less of what the reported use says, and 429s stay rare.
    result, state = simulate(budget=270, limit=constant(135), seconds=120, server="window")
    assert result.throttled_share <= 0.10
    assert state.read_share < pace.READ_SHARE
    assert result.share >= 0.5


def test_an_acceleration_429_does_not_lower_the_learned_limit():
    state = pace.initial(200)
    state.limit = state.rate = 150
    pace.throttled(state, "acceleration", 1.0, now=10.0, ceiling=200)
    assert state.limit == 150 and state.rate == pytest.approx(150 * pace.ACCELERATION_CUT)
    assert state.gentle_until == pytest.approx(10 + pace.GENTLE_SECONDS)
    # And after it the climb back is slow for a minute.
    rate = state.rate
    pace.accepted(state, 10, None, now=11.0, ceiling=200)
    slow = state.rate - rate
    fast = pace.initial(200)
    fast.rate, fast.limit, fast.observed_at = rate, 150, 10.0
    pace.accepted(fast, 10, None, now=11.0, ceiling=200)
    assert 0 < slow < fast.rate - rate


def test_a_reading_never_lifts_the_pace_above_the_budget():
    state = pace.initial(100)
    reservation = pace.reserve(state, 50, now=0.0)
    assert reservation.quiet
    # 50 batches used 10 % of a second: the limit reads as about 500 batches/s, five times the budget.
    pace.accepted(state, 50, 10, now=0.1, ceiling=100, quiet=True)
    assert state.reading > 100 and state.limit == 100 and state.rate <= 100


def test_429s_that_have_nothing_to_do_with_the_pace_do_not_collapse_it():
    # An unlimited server that reports 0 % used and answers 30 % of requests 429 at random (the chaos test's
    # sandbox): the 429s are waited out, but the pace stays at the budget.
    result, state = simulate(budget=270, limit=constant(1e9), seconds=60, random_throttles=0.3)
    assert result.throttled_share >= 0.2
    assert state.limit >= 0.8 * 270 * 0.98 and state.rate >= 0.9 * 270 * 0.98


def test_a_small_request_reading_the_use_of_others_does_not_collapse_the_limit():
    # Another feed uses 40 % of the organisation's limit: a 2-batch request reports 41 %.
    state = pace.initial(264.6)
    assert pace.reserve(state, 2, now=1000.0).quiet
    pace.accepted(state, 2, 41, now=1000.1, ceiling=264.6, quiet=True)
    assert state.limit == pytest.approx(264.6) and state.reading == 0
    # A sizeable one does read it, lowering the limit by half at most at a time.
    pace.accepted(state, 100, 90, now=1010.0, ceiling=264.6, quiet=True)
    assert state.limit == pytest.approx(264.6 / 2)


def test_an_old_reading_lets_probing_go_on():
    state = pace.initial(264.6)
    pace.accepted(state, 100, 74, now=1000.0, ceiling=264.6, quiet=True)
    assert state.reading > 0
    pace.accepted(state, 100, None, now=1000.0 + pace.READING_EXPIRES + 1, ceiling=264.6)
    assert state.reading == 0

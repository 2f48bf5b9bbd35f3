"""How fast to send to one workspace: a virtual schedule that spaces requests (GCRA), and a limit that is learned.

mParticle's limit is "variable" (270 batches/s by default): an organisation's budget can be lower than the one
configured, shared with its other feeds, or changed while a sync runs. So the configured budget is only a
ceiling, and the limit really available is learned from the answers:

- **Reading the limit.** `X-mp-rate-limit-percentage-used` on a success says how much of the limit is used.
  For a request sent after a quiet second (nothing else sent to the workspace for a second), that use is the
  request's own batches: a token bucket of one second is full then, and a one-second window empty, so
  `limit ≈ batches × 100 / percent`. Every such request reads the limit (the first of a run, the first after a
  429's wait), and while sending goes on the pace leaves a quiet second now and then (`READ_EVERY`) to read it
  again — which is how a limit that dropped or came back up is followed without a 429. A bucket loses nothing to
  that second (it refills); a window loses at most that second.
- **A 429 for speed** (`X-mp-rate-limit-exceeded` anything but `acceleration`) says the limit is below the rate
  we sent at: the pace drops below it (harder when 429s come back within seconds) and holds; the first request
  after the wait reads the limit again. When 429s come while the pace was within what a reading allowed, the
  readings overstate what can be used (the server counts differently): the share of a reading used shrinks.
- **Without readings** (no header, or requests too large for it to say anything) the pace probes: after a hold
  it climbs above the learned limit, slowly at first; a probe that fails at the same limit doubles the hold, so
  a stable limit costs fewer and fewer 429s.
- **`acceleration`** says we ramped up too fast, not that the limit is lower: ease off, climb back slowly.
- A 429 just after a success that reported less than half the limit used is not about our pace (a hiccup, a
  burst, another feed): it is waited out, the limit kept; the request after the quiet second reads the limit.
- A reported use of 95 % or more (when our own request is small enough for the number to say something) stops
  the climb and eases off before a 429 comes.

Everything here is arithmetic on a `PaceState` and a clock: the caller keeps the state (feeds.pacing keeps it in
one database row per workspace, shared by every process sending to the workspace). No Django.
"""

from __future__ import annotations

from dataclasses import dataclass

# The burst the schedule allows, in seconds of the rate. mParticle's bucket (and the sandbox's) holds one second.
BURST_SECONDS = 0.9
MIN_RATE = 1.0
# A request sent this long after the one before it finds the limit's bucket full (its window empty).
QUIET_SECONDS = 1.0
# While sending without pause, and the limit read is below the ceiling, leave a quiet second this often to read
# it again: that is how a limit that comes back up is found (at the ceiling there is nothing above to find, and
# a quiet second costs a second of sending when the limit's bucket is full anyway).
READ_EVERY = 15.0
BELOW_CEILING = 0.97
# Readings are used only from this reported use up (below, the percent is too coarse), and below 100 (at 100
# the request alone used it all: the limit is at most the request's size, no more is known).
MIN_READABLE_USE = 10
# A request must hold at least this share of the learned limit for its reported use to be read.
READ_MIN_SHARE = 0.25
# A reading not renewed for this long is forgotten (probing above the limit may go on).
READING_EXPIRES = 600.0
# The share of a reading the pace uses (it adapts between READ_SHARE_MIN and this).
READ_SHARE = 0.99
READ_SHARE_MIN = 0.5
# A 429 right after a success that reported less use than this is not about our pace.
LOW_USE_PERCENT = 50
# Reported use at or above which the pace stops climbing and eases off.
HIGH_USE_PERCENT = 95
# Our own request is this share of a second of the limit or more: the reported use says nothing then.
USE_UNREADABLE_SHARE = 0.8
# Throttled again within this many seconds: still far above the limit.
EPISODE_SECONDS = 10.0
# The cut after a 429 that is not part of an episode (a probe that went too far).
CUT = 0.8
# Between two 429s of an episode, what the server took measures its limit if it took this many requests.
MEASURE_REQUESTS = 3
# After a 429: the pace goes to this share of the learned limit, and climbs back to it at RECOVER_PER_SECOND
# (a share of the limit per second).
BELOW_LIMIT = 0.95
RECOVER_PER_SECOND = 0.2
# Probing above the learned limit (without readings): after a hold, the rate grows by PROBE_START per second,
# that step itself growing by PROBE_GROWTH per second while no 429 comes (at most PROBE_MAX per second).
HOLD_SECONDS = 10.0
HOLD_MAX_SECONDS = 120.0
PROBE_START = 0.005
PROBE_GROWTH = 0.002
PROBE_MAX = 0.1
# While a probe goes well, the learned limit follows it this far behind.
PROBE_TRAIL = 0.1
# A 429 within this share of the last learned limit confirms it (the hold doubles).
SAME_LIMIT = 0.1
# After `acceleration`: the cut, and how long the climb stays slow.
ACCELERATION_CUT = 0.8
GENTLE_SECONDS = 60.0
# Elapsed time counted per answer at most (a long idle gap is not a reason to climb a lot at once).
MAX_STEP_SECONDS = 2.0


@dataclass
class PaceState:
    rate: float  # batches per second sent at now
    limit: float  # the learned limit: what the workspace is believed to take (never above the ceiling)
    next_at: float = 0.0  # virtual time at which everything reserved so far has been paid for
    last_send_at: float = 0.0  # when the last reserved request goes out
    read_at: float = 0.0  # when the limit was last read from a quiet request
    reading: float = 0.0  # the last reading (batches/s; 0: none)
    read_share: float = READ_SHARE  # the share of a reading used
    observed_at: float = 0.0  # when an answer was last observed
    hold_until: float = 0.0  # no probing above the limit before this
    hold: float = HOLD_SECONDS  # the hold after the next 429
    probe_step: float = 0.0  # the current probing step (share of the rate per second); 0 = not probing
    gentle_until: float = 0.0  # after `acceleration`: climb slowly until then
    throttled_at: float = 0.0  # the last 429 for speed
    learned: float = 0.0  # the limit the last 429 taught (0: none yet)
    ceiling: float = 0.0  # the configured budget's share aimed for, as last given (0: not yet)
    used: float = -1.0  # the use the last success reported, in percent (-1: none)
    used_at: float = 0.0
    accepted: float = 0.0  # batches accepted since the last 429 for speed


@dataclass(frozen=True)
class Reservation:
    at: float  # when it was reserved
    rate: float  # the pace it was reserved at
    wait: float  # seconds to wait before sending (it is due at `at + wait`)
    quiet: bool  # nothing else goes to the workspace in the second before it: its answer reads the limit


def initial(ceiling: float) -> PaceState:
    ceiling = max(MIN_RATE, ceiling)
    return PaceState(rate=ceiling, limit=ceiling, ceiling=ceiling)


def clamp(state: PaceState, ceiling: float, now: float | None = None) -> None:
    """Keep the state under a (possibly changed) ceiling: staff lowered or raised the configured budget."""
    before = state.rate
    ceiling = max(MIN_RATE, ceiling)
    state.ceiling = ceiling
    state.limit = min(max(state.limit, MIN_RATE), ceiling)
    state.rate = min(max(state.rate, MIN_RATE), ceiling)
    if now is not None:
        _rescale(state, before, now)


def reserve(state: PaceState, batches: int, now: float) -> Reservation:
    """Reserve the budget for a request of `batches`.

    The request may go once what it reserved fits into the burst allowance; one larger than the whole allowance
    goes once everything before it is paid for (as a full bucket lets it through into debt) — else it would wait
    for its own cost too. Now and then the schedule leaves a quiet second first, to read the limit."""
    start = max(state.next_at, now)
    state.next_at = start + batches / state.rate
    wait = max(0.0, min(state.next_at - BURST_SECONDS, start) - now)
    if (
        state.reading
        and state.limit < state.ceiling * BELOW_CEILING
        and now - state.read_at >= READ_EVERY
        and now + wait < state.last_send_at + QUIET_SECONDS
    ):
        # Sending without pause: hold everyone for a quiet second, then this request reads the limit again.
        shift = state.last_send_at + QUIET_SECONDS - (now + wait)
        wait += shift
        state.next_at += shift
        state.read_at = now  # once per READ_EVERY, whatever the answer
    send_at = now + wait
    quiet = not state.last_send_at or send_at - state.last_send_at >= QUIET_SECONDS - 1e-9
    state.last_send_at = max(state.last_send_at, send_at)
    return Reservation(now, state.rate, wait, quiet)


def slipped(state: PaceState, seconds: float, batches: int, now: float) -> None:
    """A reserved request of `batches` went out `seconds` after its slot (its sender was busy): what follows moves
    back by as much as a second's bucket would not absorb (the bucket holds a second; the request used part)."""
    cost = batches / state.rate
    slack = max(0.0, QUIET_SECONDS - cost)
    if seconds > slack:
        # At most its own cost: what follows needs room after it, not the whole time it was late.
        shift = min(seconds - slack, cost)
        state.next_at += shift
        state.last_send_at = max(state.last_send_at, now - shift)


def release(state: PaceState, batches: int, now: float) -> None:
    """Give back a reservation whose request is not sent now (it reserves again when it is)."""
    state.next_at = max(now, state.next_at - batches / state.rate)


def accepted(
    state: PaceState, batches: int, used_percent: int | None, now: float, ceiling: float, *, quiet: bool = False
) -> None:
    """A 202 for a request of `batches`: read the limit when the request was quiet, then climb or ease off."""
    before = state.rate
    dt = _elapsed(state, now)
    state.accepted += batches
    if used_percent is not None:
        state.used, state.used_at = float(used_percent), now
    if quiet and used_percent is not None and used_percent >= 100:
        # The request alone used all of the limit: it is at most the request's size (but no more is known).
        state.limit = min(state.limit, max(MIN_RATE, batches * state.read_share))
        state.rate = min(state.rate, state.limit)
    elif (
        quiet
        and used_percent is not None
        and MIN_READABLE_USE <= used_percent < 100
        and batches >= READ_MIN_SHARE * state.limit
    ):
        # The request's own batches used this share of the limit (+0.5: the percent is rounded). A small request
        # would mostly read the use of others sharing the limit (other feeds): only sizeable ones are read, and
        # one reading lowers the limit by half at most.
        state.reading = batches * 100 / (used_percent + 0.5)
        state.read_at = now
        state.limit = min(ceiling, max(MIN_RATE, state.reading * state.read_share, state.limit * 0.5))
        state.rate = min(state.rate, state.limit)
        state.probe_step = 0.0
    if state.reading and now - state.read_at > READING_EXPIRES:
        state.reading = 0.0  # an old reading no longer holds back probing
    readable = batches < USE_UNREADABLE_SHARE * state.limit
    if used_percent is not None and readable and used_percent >= HIGH_USE_PERCENT:
        # Close to the limit: stop climbing and ease off a little, before a 429 comes.
        state.rate = max(MIN_RATE, min(state.rate, state.limit) * (1 - 0.1 * max(dt, 0.1)))
        state.probe_step = 0.0
        state.hold_until = max(state.hold_until, now + state.hold)
    elif state.rate < state.limit:
        step = RECOVER_PER_SECOND * (0.25 if now < state.gentle_until else 1.0)
        state.rate = min(state.limit, state.rate + state.limit * step * dt)
    elif not state.reading and now >= state.hold_until and now >= state.gentle_until and state.rate < ceiling:
        # No readings to go by: probe above the learned limit; the limit follows a probe that goes well.
        state.probe_step = min(PROBE_MAX, (state.probe_step or PROBE_START) + PROBE_GROWTH * dt)
        state.rate = min(ceiling, state.rate * (1 + state.probe_step * dt))
        state.limit = max(state.limit, state.rate / (1 + PROBE_TRAIL))
    elif state.reading and state.read_share < READ_SHARE:
        # Readings have held for a while: use a little more of them again.
        state.read_share = min(READ_SHARE, state.read_share + 0.002 * dt)
    clamp(state, ceiling)
    _rescale(state, before, now)


def throttled(
    state: PaceState,
    scope: str | None,
    wait: float,
    now: float,
    ceiling: float,
    *,
    batches: int = 0,
    reservation: Reservation | None = None,
) -> None:
    """A 429 after which we wait `wait` seconds: learn from it, and hold every sender until the wait is over.

    `reservation` is the throttled request's: one reserved before the last 429 or reading, at a faster rate than
    the one learned since, was paced by what was known then and teaches nothing new (one cut per episode, as
    TCP cuts once per round trip)."""
    _elapsed(state, now)
    # The next request may go only once the wait is over (reserve() allows BURST_SECONDS early).
    state.next_at = max(state.next_at, now + wait + BURST_SECONDS)
    state.probe_step = 0.0
    if (
        reservation is not None
        and reservation.at <= max(state.throttled_at, state.read_at)
        and reservation.rate > state.limit * 1.01
    ):
        return
    if scope == "acceleration":
        # Ramping too fast, not over the limit: ease off and climb back slowly.
        state.rate = max(MIN_RATE, state.rate * ACCELERATION_CUT)
        state.gentle_until = now + GENTLE_SECONDS
        clamp(state, ceiling)
        return
    if 0 <= state.used < LOW_USE_PERCENT and now - state.used_at <= EPISODE_SECONDS:
        # A moment ago the server said little of its limit was used: this 429 is not about our pace (a hiccup,
        # a burst, another feed's share). Wait it out and keep the limit; the next request, after a quiet second,
        # reads the limit again if it did change.
        return
    again = bool(state.throttled_at) and now - state.throttled_at < EPISODE_SECONDS
    if state.reading and now - state.read_at < READ_EVERY and state.rate <= state.reading * state.read_share * 1.01:
        # Throttled within what a fresh reading allowed: the readings overstate what can be used.
        state.read_share = max(READ_SHARE_MIN, state.read_share * 0.9)
    since = now - state.throttled_at
    if again and batches and state.accepted >= MEASURE_REQUESTS * batches and since > 0:
        # Throttled twice within seconds: the server's bucket went from empty to empty meanwhile, so what it
        # took in between is what its limit let through (to within one request).
        limit = min(state.rate * 0.9, state.accepted / since)
    else:
        limit = state.rate * (0.7 if again else CUT)
    previous = state.learned
    state.limit = state.learned = max(MIN_RATE, min(limit, state.limit))
    if previous and abs(state.limit - previous) <= SAME_LIMIT * previous:
        state.hold = min(HOLD_MAX_SECONDS, state.hold * 2)  # the same limit again: probe less often
    else:
        state.hold = HOLD_SECONDS
    state.rate = max(MIN_RATE, state.limit * BELOW_LIMIT)
    state.hold_until = now + wait + state.hold
    state.throttled_at = now
    state.accepted = 0.0
    clamp(state, ceiling)


def _rescale(state: PaceState, before: float, now: float) -> None:
    """The rate changed from `before`: what is reserved and not yet paid for is paid at the new rate. (A reading
    that halves the rate must also double the debt of the requests reserved at the old one, or the next request
    would follow them as closely as the old rate allowed. After a 429 the server's wait sets the schedule.)"""
    if state.rate != before and state.next_at > now:
        state.next_at = now + (state.next_at - now) * before / state.rate


def _elapsed(state: PaceState, now: float) -> float:
    dt = min(MAX_STEP_SECONDS, max(0.0, now - state.observed_at)) if state.observed_at else 0.0
    state.observed_at = max(state.observed_at, now)
    return dt

"""A sender: one process sending the deliveries of many runs at once, each run in its own order and pace.

Converting is CPU work; sending is mostly waiting on the network. So reading is a django-q2 task per run, and
sending is done by a `Dispatcher` in every worker process: it takes up runs that have deliveries to send (a
lease per run, renewed as it goes, so that a dead process's runs are taken over by another), keeps a bounded
number of requests in flight over a small pool of threads, and steps each run's `Lane` (feeds.sending) when it
is due. A run waiting for its workspace's pace, a Retry-After or a backoff holds no thread: it sits in the
schedule until its time. Waits longer than MPFEED_MAX_INLINE_WAIT give the run back (it waits, and any
sender takes it up when the wait is over).

Fair shares: when more runs are due than there are threads, the one whose workspace was served longest ago
goes first; a sender takes no more than its share of the runs waiting for one (the others' shares go to the
other live senders); and when runs wait for a sender while it holds its maximum, it gives back the runs it held
longest, so every run gets its turn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from feeds import alerts, db, events, sync
from feeds.models import Delivery, Sender, SyncRun, Workspace
from feeds.pacing import Pacing
from feeds.sending import Again, Lane, Park, Step, Stop

log = logging.getLogger(__name__)

# The interpreter's switch interval in a process that sends (Python's default is 5 ms).
SWITCH_INTERVAL = 0.0005
# A run whose step raised is not taken up again by this sender for this long; after this many in a row it fails.
COOLDOWN_SECONDS = 5.0
MAX_ERRORS = 5
# A control cycle that raised (the database unreachable) is tried again after this long.
CYCLE_RETRY_SECONDS = 2.0


@dataclass
class _Slot:
    run_id: int
    workspace_id: int
    lane: Lane
    held_since: float
    ready_at: float = 0.0
    busy: bool = False
    dropped: bool = False  # no longer ours: finish the step in flight, then forget it


@dataclass
class _Done:
    slot: _Slot
    step: Step | None = None
    error: BaseException | None = None


@dataclass
class Dispatcher:
    """Sends for many runs at once. `run()` in the calling thread, or `start()` in a background one."""

    threads: int = field(default_factory=lambda: settings.MPFEED_SEND_THREADS)
    max_lanes: int = field(default_factory=lambda: settings.MPFEED_SEND_LANES)
    poll: float = field(default_factory=lambda: settings.MPFEED_SEND_POLL)
    lease_seconds: float = field(default_factory=lambda: settings.MPFEED_SEND_LEASE)
    # Give back runs held this long when others wait for a sender.
    turn_seconds: float = field(default_factory=lambda: settings.MPFEED_SEND_TURN)
    pacing: Pacing = field(default_factory=Pacing)
    # Called with a run's id when it ran out of deliveries before it was fully read (tasks.py queues the reading).
    request_reading: object = None
    # Only these runs (tests, benchmarks); None: any.
    only: set[int] | None = None

    def __post_init__(self) -> None:
        self.slots: dict[int, _Slot] = {}
        self.served: dict[int, float] = {}  # workspace id → when a request of it last started
        self.cooldown: dict[int, float] = {}
        self.errors: dict[int, int] = {}  # run id → steps that raised in a row
        self.work: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.sender: Sender | None = None
        self.requests_done = 0  # requests of the runs this sender no longer holds
        self._threads: list[threading.Thread] = []
        self._control: threading.Thread | None = None
        self._next_poll = 0.0
        self.polls = 0
        self.runs_seen: list[int] = []  # the runs it took up, in order

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._control = threading.Thread(target=self.run, name="mpfeed-sender", daemon=True)
        self._control.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking up runs, let the requests in flight finish (by default as long as their timeouts allow), and
        give every run back."""
        self.stopping.set()
        if timeout is None:
            timeout = settings.MPFEED_READ_TIMEOUT + settings.MPFEED_CONNECT_TIMEOUT + 5
        if self._control is not None and self._control is not threading.current_thread():
            self._control.join(timeout)

    def run(self, until=None) -> None:
        """The control loop: until stopped, or until `until()` is true (then the held runs are given back)."""
        self.sender = Sender.objects.create(host=socket.gethostname()[:200], pid=os.getpid())
        log.info("sender %s started: %s threads, up to %s runs", self.sender, self.threads, self.max_lanes)
        for n in range(self.threads):
            thread = threading.Thread(target=self._worker, name=f"mpfeed-sender-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            while not self.stopping.is_set():
                if until is not None and until():
                    break
                try:
                    self._cycle()
                except Exception:
                    # The database went away or stayed locked: the runs' leases may lapse meanwhile (other senders
                    # then take them over); this sender carries on once it can.
                    log.exception("sender %s: cycle failed; trying again in %s s", self.sender, CYCLE_RETRY_SECONDS)
                    self._close_own_connection()
                    self.stopping.wait(CYCLE_RETRY_SECONDS)
        finally:
            self._drain()
            log.info("sender %s stopped", self.sender)
            self.stopped.set()

    def _cycle(self) -> None:
        now = self.pacing.clock()
        if now >= self._next_poll:
            self._poll()
            self._next_poll = self.pacing.clock() + self.poll
        if self.threads == 0:
            self._step_here()
            return
        self._dispatch()
        # Sleep until the next run is due, the next poll, or a step finishes, whichever comes first.
        due = [s.ready_at for s in self.slots.values() if not s.busy and not s.dropped]
        idle = sum(1 for s in self.slots.values() if s.busy) < self.threads
        wake = min([self._next_poll, *(due if idle else [])])
        timeout = max(0.0, min(self.poll, wake - self.pacing.clock()))
        try:
            self._handle(self.done.get(timeout=timeout))
        except queue.Empty:
            return
        while True:
            try:
                self._handle(self.done.get_nowait())
            except queue.Empty:
                break

    def _step_here(self) -> None:
        """No threads (tests): step the due runs one after another in this thread, then sleep until the next."""
        now = self.pacing.clock()
        due = [s for s in self.slots.values() if not s.dropped and s.ready_at <= now]
        due.sort(key=lambda s: (self.served.get(s.workspace_id, 0.0), s.ready_at))
        for slot in due:
            if self.stopping.is_set():
                return
            self.served[slot.workspace_id] = self.pacing.clock()
            slot.busy = True
            try:
                step = slot.lane.step()
                if not isinstance(step, Again):
                    self._ended(slot, step)
                self._handle(_Done(slot, step=step))
            except Exception as e:  # noqa: BLE001 (as a worker thread would report it)
                self._handle(_Done(slot, error=e))
        if not due:
            ready = [s.ready_at for s in self.slots.values() if not s.dropped]
            pause = (min(ready) if ready else self._next_poll) - self.pacing.clock()
            if pause > 0:
                self.pacing.sleep(pause)

    def _drain(self) -> None:
        deadline = time.monotonic() + settings.MPFEED_READ_TIMEOUT + settings.MPFEED_CONNECT_TIMEOUT
        while any(s.busy for s in self.slots.values()) and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self._handle(self.done.get(timeout=0.2))
        for slot in list(self.slots.values()):
            if not slot.busy:
                self._give_back(slot)
        for _ in self._threads:
            self.work.put(None)
        if self.sender is not None:
            Sender.objects.filter(pk=self.sender.pk).update(
                stopped_at=timezone.now(), lanes=0, in_flight=0, requests=self.requests
            )
        self._close_own_connection()

    def _close_own_connection(self) -> None:
        """Close the control thread's database connection — its own thread's only: run() in a caller's thread
        (tests) leaves the caller's connection alone."""
        if self._control is threading.current_thread():
            connection.close()

    # ------------------------------------------------------------------------------------------- workers

    def _worker(self) -> None:
        try:
            while True:
                slot = self.work.get()
                if slot is None:
                    return
                try:
                    step = slot.lane.step()
                    if not isinstance(step, Again):
                        self._ended(slot, step)
                    self.done.put(_Done(slot, step=step))
                except BaseException as e:  # noqa: BLE001 (reported to the control loop, which decides)
                    connection.close()  # a broken connection is opened afresh by the next step
                    self.done.put(_Done(slot, error=e))
        finally:
            connection.close()

    def _read_more(self, run_id: int) -> None:
        """A run's deliveries run low before it is fully read: queue its reading (once in a while)."""
        if sync.request_reading(run_id) and callable(self.request_reading):
            self.request_reading(run_id)

    def _ended(self, slot: _Slot, step: Step) -> None:
        """What a run's sending comes to when it stops here (in a worker thread: database and alerts)."""
        run = slot.lane.run
        slot.lane.close()
        if isinstance(step, Park):
            run.wait_until(step.until, step.reason, sender=self.sender)
        elif step is Stop.IDLE:
            try:
                run.refresh_from_db(fields=["read_done", "status"])
            except SyncRun.DoesNotExist:
                return  # its reader ended it as nothing new (feeds.sync._fold_nothing_new): nothing left of it
            if run.read_done:
                sync.conclude_if_done(run)
            else:
                self._read_more(run.pk)
            # Not ended (more is being read, or a replay came in meanwhile): any sender takes it up again.
            with db.atomic():
                SyncRun.objects.filter(pk=run.pk, sender=self.sender).update(
                    sender=None, send_lease_until=None, send_released_at=timezone.now()
                )
        if step is not Stop.IDLE or run.status in SyncRun.FINISHED_STATUSES:
            alerts.evaluate_safely(slot.lane.workspace)

    # --------------------------------------------------------------------------------------- the control

    def _dispatch(self) -> None:
        if self.stopping.is_set():
            return
        busy = sum(1 for s in self.slots.values() if s.busy)
        if busy >= self.threads:
            return
        now = self.pacing.clock()
        due = [s for s in self.slots.values() if not s.busy and not s.dropped and s.ready_at <= now]
        # The workspace served longest ago first, then the run due longest ago.
        due.sort(key=lambda s: (self.served.get(s.workspace_id, 0.0), s.ready_at))
        for slot in due[: self.threads - busy]:
            slot.busy = True
            self.served[slot.workspace_id] = now
            self.work.put(slot)

    def _handle(self, done: _Done) -> None:
        slot = done.slot
        slot.busy = False
        if done.error is not None:
            errors = self.errors[slot.run_id] = self.errors.get(slot.run_id, 0) + 1
            log.error("sender %s: run %s: %r", self.sender, slot.run_id, done.error, exc_info=done.error)
            if errors >= MAX_ERRORS:
                # Not something waiting fixes: keep what is left as failed deliveries, for a person to replay.
                self.errors.pop(slot.run_id, None)
                run = slot.lane.run
                run.deliveries.pending().update(state=Delivery.State.FAILED, first_failure_at=timezone.now())
                if run.finish(
                    SyncRun.Status.FAILED,
                    "Internal error while sending; see the worker log. The deliveries not sent are kept as failed: "
                    "replay them once the cause is fixed.",
                ):
                    events.run_ended(run)
                slot.lane.close()
                self._forget(slot)
                return
            self.cooldown[slot.run_id] = self.pacing.clock() + COOLDOWN_SECONDS
            self._give_back(slot)
            return
        self.errors.pop(slot.run_id, None)
        step = done.step
        if isinstance(step, Again):
            slot.ready_at = step.at
            if slot.dropped or self.stopping.is_set():
                self._give_back(slot)
            return
        self._forget(slot)  # parked, blocked or out of deliveries: its leases are settled by _ended

    def _give_back(self, slot: _Slot) -> None:
        if not slot.dropped:
            slot.lane.give_up_reservation()
            with db.atomic():
                SyncRun.objects.filter(pk=slot.run_id, sender=self.sender).update(
                    sender=None, send_lease_until=None, send_released_at=timezone.now()
                )
        slot.lane.close()
        self._forget(slot)

    def _forget(self, slot: _Slot) -> None:
        if self.slots.pop(slot.run_id, None) is not None:
            self.requests_done += slot.lane.requests

    @property
    def requests(self) -> int:
        """Requests sent since this sender started."""
        return self.requests_done + sum(s.lane.requests for s in self.slots.values())

    @property
    def in_flight(self) -> int:
        return sum(1 for s in self.slots.values() if s.busy)

    # -------------------------------------------------------------------------------------- the database

    def _row(self) -> Sender:
        """This sender's row, which run() makes before the first cycle."""
        if self.sender is None:
            raise RuntimeError("the sender is not running")
        return self.sender

    def _poll(self) -> None:
        sender = self._row()
        self.polls += 1
        now = timezone.now()
        held = list(self.slots)
        until = now + timedelta(seconds=self.lease_seconds)
        if held:
            # Renew the leases; a run whose lease was lost (this process stalled) is no longer ours.
            with db.atomic():
                SyncRun.objects.filter(pk__in=held, sender=sender).update(send_lease_until=until)
            rows = {
                r["pk"]: r
                for r in SyncRun.objects.filter(pk__in=held).values("pk", "status", "sender_id", "workspace__status")
            }
            for run_id in held:
                slot = self.slots[run_id]
                row = rows.get(run_id)
                if row is None or row["sender_id"] != sender.pk or row["status"] != SyncRun.Status.RUNNING:
                    slot.dropped = True  # ended, blocked, replaced, or taken over
                elif row["workspace__status"] != Workspace.Status.ACTIVE and not slot.busy:
                    self._stop_for_workspace(slot, row["workspace__status"])
                if slot.dropped and not slot.busy:
                    slot.lane.close()
                    self._forget(slot)
        with db.atomic():
            Sender.objects.filter(pk=sender.pk).update(
                heartbeat_at=now, lanes=len(self.slots), in_flight=self.in_flight, requests=self.requests
            )
        if not self.stopping.is_set():
            self._take_up(now, until)

    def _stop_for_workspace(self, slot: _Slot, status: str) -> None:
        """Staff paused the workspace, or another run's answer rejected its credentials: this run is blocked too.
        (Alerts about it come from the sweeper's next round, not from this thread, which must keep the leases.)"""
        run = slot.lane.run
        slot.lane.give_up_reservation()
        if status == Workspace.Status.PAUSED:
            run.finish(SyncRun.Status.BLOCKED, sync.PAUSED)
        else:
            workspace = Workspace.objects.get(pk=slot.workspace_id)
            run.finish(SyncRun.Status.BLOCKED, workspace.status_message or f"The workspace is {status}.")
        slot.dropped = True

    def sendable(self, now=None):
        """Runs with deliveries to send that no sender holds (of `only`, when given): what this sender takes up and
        claims, and what a caller waits on to know that nothing is left to send (tests/helpers.py's dispatch)."""
        now = now or timezone.now()
        # Conditions on the run's own row (leases, status) and EXISTS for the rest — no join: an UPDATE that waited
        # for another sender's claim to commit checks them again on the row as that left it (PostgreSQL).
        pending = Delivery.objects.filter(run=OuterRef("pk"), state=Delivery.State.PENDING)
        active = Workspace.objects.filter(pk=OuterRef("workspace_id"), status=Workspace.Status.ACTIVE)
        runs = SyncRun.objects.filter(
            Q(status=SyncRun.Status.RUNNING) | Q(status=SyncRun.Status.WAITING, resume_at__lte=now),
            Q(send_lease_until__isnull=True) | Q(send_lease_until__lt=now),
            Exists(pending),
            Exists(active),
        )
        if self.only is not None:
            runs = runs.filter(pk__in=self.only)
        return runs

    def _take_up(self, now, until) -> None:
        clock = self.pacing.clock()
        self.cooldown = {k: v for k, v in self.cooldown.items() if v > clock}
        waiting = list(
            self.sendable(now)
            .exclude(pk__in=[*self.cooldown, *self.slots])
            .order_by(Coalesce("send_released_at", "created_at"), "pk")
            .values_list("pk", flat=True)[: self.max_lanes + 1]
        )
        if not waiting:
            return
        # This sender's share of the runs being sent or waiting for a sender, among the live senders.
        # Live: beat within half a lease (they beat every poll). A dead sender's runs become free only once its
        # leases ran out, and by then it no longer counts: the living share its runs.
        senders = max(1, Sender.objects.alive(now, within=self.lease_seconds / 2).count())
        sending = SyncRun.objects.filter(send_lease_until__gte=now, sender__isnull=False).count()
        share = math.ceil((sending + len(waiting)) / senders)
        room = min(self.max_lanes, max(share, 1)) - len(self.slots)
        if room <= 0:
            if len(self.slots) >= self.max_lanes:
                self._take_turns()
            return
        for run_id in waiting[:room]:
            with db.atomic():
                claimed = (
                    self.sendable(now)
                    .filter(pk=run_id)
                    .update(status=SyncRun.Status.RUNNING, resume_at=None, sender=self.sender, send_lease_until=until)
                )
            if not claimed:
                continue  # another sender was quicker
            run = SyncRun.objects.select_related("workspace", "job").get(pk=run_id)
            self.runs_seen.append(run_id)
            if run.error.startswith(("Waiting for", "Retrying after", "Pacing:")):
                SyncRun.objects.filter(pk=run_id, sender=self.sender).update(error="")
                run.error = ""
            lane = Lane(run, self.pacing, sync.lease(), wants_reading=self._read_more)
            self.slots[run_id] = _Slot(run_id, run.workspace_id, lane, held_since=self.pacing.clock())

    def _take_turns(self) -> None:
        """Runs wait for a sender and this one is full: give back the run held longest, if past its turn."""
        clock = self.pacing.clock()
        idle = [s for s in self.slots.values() if not s.busy and clock - s.held_since >= self.turn_seconds]
        if idle:
            self._give_back(min(idle, key=lambda s: s.held_since))


_background: Dispatcher | None = None


def start_background(request_reading) -> Dispatcher | None:
    """Start this process's sender (a django-q2 worker's), once; it stops when the process exits."""
    global _background
    if _background is not None or settings.MPFEED_SEND_THREADS <= 0:
        return _background
    # A thread holding the write lock (feeds.db) gives the interpreter up at every query; with the default 5 ms
    # switch interval it may wait that long to get it back, each time, while the others wait for the lock.
    sys.setswitchinterval(SWITCH_INTERVAL)
    _background = Dispatcher(request_reading=request_reading)
    _background.start()
    from multiprocessing import util

    util.Finalize(_background, _background.stop, exitpriority=10)
    return _background

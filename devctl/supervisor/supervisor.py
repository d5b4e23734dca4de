"""The supervisor: start children, pass on their output, restart the crashed, stop in order.

One thread (the caller of ``run``) owns the children: it starts, reaps, restarts,
stops and kills them, which also keeps ``PR_SET_PDEATHSIG`` meaningful (see
``devctl.supervisor.child``). Helper threads only read output lines, probe health
URLs (``devctl.supervisor.watchdog``: ready, then still alive) and watch files;
they report back through flags under a lock.

Callbacks (``on_line``, ``on_event``, ``on_change``) are called one at a time,
from any thread, and must not call back into the supervisor but ``stop``. A
child's last lines are handed over before the event that says it exited.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from devctl.processes import describe_returncode
from devctl.supervisor.backoff import Backoff
from devctl.supervisor.child import launch, read_lines, signal_group
from devctl.supervisor.spec import (
    ALL_READY,
    BACKOFF,
    EXITED,
    GAVE_UP,
    GAVE_UP_STATE,
    HUNG,
    KILLED,
    READY,
    RELOADING,
    SHUTDOWN,
    STARTED,
    STARTING,
    STOPPED,
    STOPPED_STATE,
    STOPPING,
    STOPPING_STATE,
    UNHEALTHY,
    UP,
    ChildSpec,
    ChildState,
    Event,
    Outcome,
    RestartPolicy,
)
from devctl.supervisor.watchdog import watch_health

log = logging.getLogger(__name__)

_TICK_S = 0.1
_READER_JOIN_S = 2.0
_UNKILLABLE_S = 10.0  # after SIGKILL: how long shutdown waits for a child to go


@dataclass
class _Slot:
    spec: ChildSpec
    backoff: Backoff
    popen: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    generation: int = 0
    state: str = STOPPED_STATE
    started_mono: float = 0.0
    started_at: float | None = None
    create_time: float | None = None
    restarts: int = 0
    next_start: float | None = None
    last_exit: str | None = None
    unhealthy: int | None = None  # the generation whose health check timed out
    hung: int | None = None  # the generation that stopped answering its health URL
    hung_reason: str = ""  # what its last liveness probe got
    term_deadline: float | None = None  # SIGTERM sent: SIGKILL after this
    reloading: bool = False


LineCallback = Callable[[str, str], None]
EventCallback = Callable[[Event], None]
ChangeCallback = Callable[[list[ChildState], bool], None]


class Supervisor:
    """Keeps ``children`` running until stopped; see the module doc.

    ``on_change(children, ready)`` gets a snapshot after every change of state
    (``ready``: the ALL_READY event has happened). ``watch``: directories whose
    Python files, when changed, restart the children with ``reload`` set.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        policy: RestartPolicy | None = None,
        *,
        on_line: LineCallback | None = None,
        on_event: EventCallback | None = None,
        on_change: ChangeCallback | None = None,
        watch: Sequence[Path] = (),
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.policy = policy or RestartPolicy()
        self._slots = [_Slot(spec, Backoff(self.policy)) for spec in children]
        self._on_line = on_line
        self._on_event = on_event
        self._on_change = on_change
        self._watch = list(watch)
        self._lock = threading.Lock()  # slot fields the helper threads touch
        self._emit_lock = threading.Lock()  # one callback at a time
        self._wake = threading.Event()
        self._stop_signal: int | None = None
        self._stop_requested = False
        self._force = False  # a second signal: SIGKILL whatever still runs
        self._stopping = False
        self._ready = False
        self._launched = False  # every child was started once
        self._reload_pending = False
        self._watch_stop = threading.Event()
        self._halt_probes = threading.Event()  # shutdown: health watchers end at once
        self._ran = False
        self._failed_callbacks: list[Callable[..., None]] = []

    # --- the public surface ------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> Outcome:
        """Start every child and supervise them until a signal, ``stop()`` or a give-up.

        With ``handle_signals`` (in the main thread only), SIGINT, SIGTERM and SIGHUP
        start the graceful shutdown and a second one kills what still runs; the
        previous handlers are restored on return.
        """
        if self._ran:
            raise RuntimeError("a Supervisor runs once")
        self._ran = True
        previous = self._install_signals() if handle_signals else {}
        outcome = Outcome()
        try:
            self._start_watcher()
            for slot in self._slots:
                self._start(slot, time.monotonic())
            self._launched = True
            self._check_all_ready()
            outcome.all_gave_up = self._loop()
            outcome.signal = self._stop_signal
            self._shutdown(outcome)
        finally:
            self._watch_stop.set()
            self._halt_probes.set()
            # Only after an exception: every child is still ours to kill.
            self._kill_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        outcome.gave_up = [s.spec.name for s in self._slots if s.state == GAVE_UP_STATE]
        return outcome

    def stop(self, sig: int | None = None) -> None:
        """Ask for the graceful shutdown (thread-safe); a second call kills at once."""
        if self._stop_requested:
            self._force = True
        else:
            self._stop_signal = sig
            self._stop_requested = True
        self._wake.set()

    def snapshot(self) -> list[ChildState]:
        with self._lock:
            return [self._state_of(slot) for slot in self._slots]

    # --- the loop ------------------------------------------------------------

    def _loop(self) -> bool:
        """Supervise until asked to stop (False) or every essential child gave up (True)."""
        essential = [s for s in self._slots if s.spec.essential] or self._slots
        while not self._stop_requested:
            now = time.monotonic()
            for slot in self._slots:
                self._check(slot, now)
            if self._reload_pending:
                self._reload(now)
            if essential and all(s.state == GAVE_UP_STATE for s in essential):
                return True
            self._wake.wait(_TICK_S)
            self._wake.clear()
        return False

    def _check(self, slot: _Slot, now: float) -> None:
        popen = slot.popen
        if popen is None:
            if slot.next_start is not None and now >= slot.next_start:
                self._start(slot, now)
            return
        returncode = popen.poll()
        if returncode is None:
            if slot.term_deadline is not None:
                if now > slot.term_deadline:
                    signal_group(popen, signal.SIGKILL)
            elif slot.unhealthy == slot.generation:
                url = slot.spec.health_url
                self._emit(
                    UNHEALTHY,
                    slot,
                    f"{slot.spec.name} did not answer {url} within "
                    f"{self.policy.ready_timeout:g}s: stopping it",
                )
                self._terminate(slot, now)
            elif slot.hung == slot.generation:
                self._kill_hung(slot, popen, now)
            return
        self._reaped(slot, returncode, now)

    def _kill_hung(self, slot: _Slot, popen: subprocess.Popen[bytes], now: float) -> None:
        # SIGKILL, not SIGTERM: a hung process would not drain, and waiting out its
        # stop timeout only keeps it unavailable longer. Reaped next, it takes the
        # crash path: backoff, and it counts towards the give-up.
        policy = self.policy
        message = (
            f"{slot.spec.name} (pid {popen.pid}) is hung: {slot.spec.health_url} failed "
            f"{policy.liveness_failures} probes in a row (every {policy.liveness_interval:g}s, "
            f"last: {slot.hung_reason}); killing it"
        )
        self._emit(HUNG, slot, message, {"pid": popen.pid, "reason": slot.hung_reason})
        signal_group(popen, signal.SIGKILL)
        with self._lock:
            slot.term_deadline = now  # already killed: SIGKILL again each tick until reaped

    def _reaped(self, slot: _Slot, returncode: int, now: float) -> None:
        name = slot.spec.name
        hung = slot.hung == slot.generation
        self._finish(slot)
        slot.last_exit = describe_returncode(returncode)
        if hung:
            slot.last_exit = f"hung, {slot.last_exit}"
        if slot.reloading:
            slot.reloading = False
            self._start(slot, now)
            return
        uptime = now - slot.started_mono
        delay = slot.backoff.crashed(now, uptime)
        data = {"returncode": returncode, "uptime_s": round(uptime, 3)}
        if delay is None:
            with self._lock:
                slot.state = GAVE_UP_STATE
            crashes = slot.backoff.recent_crashes
            self._emit(
                GAVE_UP,
                slot,
                f"{name} crashed {crashes} times within {self.policy.window:g}s "
                f"(last: {slot.last_exit}); giving up on it",
                {**data, "crashes": crashes},
            )
        else:
            with self._lock:
                slot.state = BACKOFF
                slot.next_start = now + delay
            self._emit(
                EXITED,
                slot,
                f"{name} exited ({slot.last_exit}) after {uptime:.1f}s; restarting in {delay:g}s",
                {**data, "delay": delay},
            )
        self._check_all_ready()
        self._changed()

    def _finish(self, slot: _Slot) -> None:
        """After the child exited: its leftover group, its last lines, its fields."""
        popen = slot.popen
        if popen is None:
            return
        signal_group(popen, signal.SIGKILL)
        if slot.reader is not None:
            slot.reader.join(_READER_JOIN_S)
        with self._lock:
            slot.popen = None
            slot.reader = None
            slot.term_deadline = None
            slot.next_start = None

    def _start(self, slot: _Slot, now: float) -> None:
        spec = slot.spec
        restart = slot.generation > 0 and slot.last_exit is not None and slot.state == BACKOFF
        try:
            popen = launch(spec)
        except OSError as exc:
            # Cannot even start (missing program, bad cwd): a crash like any other.
            slot.generation += 1
            slot.started_mono = now
            slot.last_exit = f"could not start: {exc.strerror or exc}"
            delay = slot.backoff.crashed(now, 0.0)
            with self._lock:
                slot.state = GAVE_UP_STATE if delay is None else BACKOFF
                slot.next_start = None if delay is None else now + delay
            kind = GAVE_UP if delay is None else EXITED
            then = "giving up on it" if delay is None else f"retrying in {delay:g}s"
            self._emit(kind, slot, f"{spec.name} {slot.last_exit}; {then}", {"delay": delay})
            self._changed()
            return
        try:
            create_time: float | None = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = None  # already gone: the loop reaps it next
        with self._lock:
            slot.generation += 1
            slot.popen = popen
            slot.started_mono = now
            slot.started_at = time.time()
            slot.create_time = create_time
            slot.next_start = None
            slot.unhealthy = None
            slot.hung = None
            slot.term_deadline = None
            slot.restarts += 1 if restart else 0
            slot.state = STARTING if spec.health_url else UP
            generation = slot.generation
        assert popen.stdout is not None
        slot.reader = read_lines(popen.stdout, spec.name, self._line)
        self._emit(STARTED, slot, f"{spec.name} started (pid {popen.pid})", {"pid": popen.pid})
        if spec.health_url:
            threading.Thread(
                target=self._watch_health,
                args=(slot, generation, popen),
                name=f"supervisor-{spec.name}-health",
                daemon=True,
            ).start()
        else:
            self._check_all_ready()
        self._changed()

    def _watch_health(self, slot: _Slot, generation: int, popen: subprocess.Popen[bytes]) -> None:
        """The health thread of one start of ``slot``: ready, then alive (see watchdog)."""
        url = slot.spec.health_url
        assert url is not None

        def current() -> bool:
            # returncode only: reaping is the loop's job. A child being stopped (a
            # reload, the shutdown) may stop answering: that is no hang.
            return (
                not self._stopping
                and slot.generation == generation
                and popen.returncode is None
                and slot.term_deadline is None
            )

        def ready() -> None:
            with self._lock:
                now_up = slot.generation == generation and slot.state == STARTING
                if now_up:
                    slot.state = UP
            if now_up:
                self._emit(READY, slot, f"{slot.spec.name} is up ({url} answers)")
                self._check_all_ready()
                self._changed()

        def unhealthy() -> None:
            with self._lock:
                if slot.generation == generation:
                    slot.unhealthy = generation
            self._wake.set()

        def hung(reason: str) -> None:
            with self._lock:
                if slot.generation == generation:
                    slot.hung = generation
                    slot.hung_reason = reason
            self._wake.set()

        watch_health(
            url,
            self.policy,
            current=current,
            on_ready=ready,
            on_unhealthy=unhealthy,
            on_hung=hung,
            halt=self._halt_probes,
        )

    def _check_all_ready(self) -> None:
        with self._lock:
            if self._ready or self._stopping or not self._launched:
                return
            watched = [s for s in self._slots if s.spec.health_url]
            if any(s.state not in (UP, GAVE_UP_STATE) for s in watched):
                return
            up = [s.spec.name for s in watched if s.state == UP]
            if watched and not up:
                return  # none came up: that is the give-up, not readiness
            self._ready = True
            gave_up = [s.spec.name for s in watched if s.state == GAVE_UP_STATE]
        message = "every child is up" if not gave_up else f"up: {', '.join(up)}"
        self._emit(ALL_READY, None, message, {"up": up, "gave_up": gave_up})

    def _terminate(self, slot: _Slot, now: float) -> None:
        if slot.popen is None:
            return
        signal_group(slot.popen, signal.SIGTERM)
        # A stopped child (SIGSTOP, Ctrl-Z) holds the SIGTERM until it is continued:
        # continued, it can drain instead of waiting for the SIGKILL.
        signal_group(slot.popen, signal.SIGCONT)
        with self._lock:
            slot.term_deadline = now + slot.spec.stop_timeout

    # --- reload ---------------------------------------------------------------

    def _start_watcher(self) -> None:
        if not self._watch or not any(s.spec.reload for s in self._slots):
            return
        from watchfiles import PythonFilter, watch

        def run() -> None:
            for _changes in watch(
                *self._watch, watch_filter=PythonFilter(), stop_event=self._watch_stop
            ):
                self._reload_pending = True
                self._wake.set()

        threading.Thread(target=run, name="supervisor-watch", daemon=True).start()

    def _reload(self, now: float) -> None:
        self._reload_pending = False
        for slot in self._slots:
            if not slot.spec.reload:
                continue
            if slot.popen is not None and not slot.reloading:
                slot.reloading = True
                self._emit(RELOADING, slot, f"source files changed: restarting {slot.spec.name}")
                self._terminate(slot, now)
            elif slot.state in (BACKOFF, GAVE_UP_STATE):
                # The change may be the fix: start afresh, crash history forgotten.
                slot.backoff = Backoff(self.policy)
                self._emit(RELOADING, slot, f"source files changed: starting {slot.spec.name}")
                self._start(slot, now)

    # --- shutdown ---------------------------------------------------------

    def _shutdown(self, outcome: Outcome) -> None:
        self._halt_probes.set()
        with self._lock:
            self._stopping = True
            for slot in self._slots:
                slot.next_start = None
                if slot.popen is None and slot.state == BACKOFF:
                    slot.state = STOPPED_STATE
        cause = (
            f"on {signal.Signals(outcome.signal).name}"
            if outcome.signal
            else ("every essential child gave up" if outcome.all_gave_up else "on request")
        )
        self._emit(SHUTDOWN, None, f"stopping ({cause})", {"signal": outcome.signal})
        for phase in sorted({s.spec.stop_phase for s in self._slots}):
            self._stop_phase([s for s in self._slots if s.spec.stop_phase == phase], outcome)
        self._changed()

    def _stop_phase(self, slots: list[_Slot], outcome: Outcome) -> None:
        now = time.monotonic()
        for slot in slots:
            if slot.popen is None:
                continue
            if slot.popen.poll() is None:
                self._emit(
                    STOPPING,
                    slot,
                    f"stopping {slot.spec.name} (SIGTERM; "
                    f"SIGKILL after {slot.spec.stop_timeout:g}s)",
                )
            with self._lock:
                slot.state = STOPPING_STATE
            self._terminate(slot, now)
        self._changed()
        pending = [s for s in slots if s.popen is not None]
        killed: dict[str, float] = {}
        while pending:
            now = time.monotonic()
            for slot in list(pending):
                assert slot.popen is not None
                returncode = slot.popen.poll()
                if returncode is None:
                    if now - killed.get(slot.spec.name, now) > _UNKILLABLE_S:
                        # Stuck in the kernel (uninterruptible I/O): stop waiting for it
                        # here; run() still tries once more before it returns.
                        log.warning("%s did not exit after SIGKILL", slot.spec.name)
                        pending.remove(slot)
                        continue
                    overdue = slot.term_deadline is not None and now > slot.term_deadline
                    if (overdue or self._force) and slot.spec.name not in killed:
                        killed[slot.spec.name] = now
                        outcome.killed.append(slot.spec.name)
                        reason = (
                            "asked twice"
                            if self._force and not overdue
                            else f"did not stop within {slot.spec.stop_timeout:g}s of SIGTERM"
                        )
                        self._emit(KILLED, slot, f"{slot.spec.name} {reason}: killing it")
                        signal_group(slot.popen, signal.SIGKILL)
                    continue
                self._finish(slot)
                slot.last_exit = describe_returncode(returncode)
                with self._lock:
                    slot.state = STOPPED_STATE
                # Servers that re-raise the SIGTERM they handled (uvicorn) end "killed"
                # by the very signal that asked them to stop: that is a clean stop.
                how = "on SIGTERM" if returncode == -signal.SIGTERM else slot.last_exit
                self._emit(
                    STOPPED,
                    slot,
                    f"{slot.spec.name} stopped ({how})",
                    {"returncode": returncode},
                )
                pending.remove(slot)
            if pending:
                self._wake.wait(0.05)
                self._wake.clear()

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.popen is not None:
                signal_group(slot.popen, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.popen.wait(5)
                self._finish(slot)
                with self._lock:
                    slot.state = STOPPED_STATE

    # --- signals and callbacks ---------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Flags only, no lock: the handler runs in the loop's thread, which may hold
        # the emit lock or the wake event's own lock at that moment. The loop polls
        # the flags every tick.
        if self._stop_requested:
            self._force = True
        else:
            self._stop_signal = signum
            self._stop_requested = True

    def _state_of(self, slot: _Slot) -> ChildState:
        running = slot.popen is not None
        return ChildState(
            name=slot.spec.name,
            role=slot.spec.role,
            state=slot.state,
            pid=slot.popen.pid if slot.popen is not None else None,
            create_time=slot.create_time if running else None,
            port=slot.spec.port,
            ready_url=slot.spec.ready_url,
            started_at=slot.started_at if running else None,
            restarts=slot.restarts,
            last_exit=slot.last_exit,
        )

    def _line(self, name: str, line: str) -> None:
        if self._on_line is None:
            return
        with self._emit_lock:
            self._guarded(self._on_line, name, line)

    def _emit(
        self, kind: str, slot: _Slot | None, message: str, data: dict[str, Any] | None = None
    ) -> None:
        log.debug("%s", message)
        if self._on_event is None:
            return
        event = Event(kind, slot.spec.name if slot else None, message, dict(data or {}))
        with self._emit_lock:
            self._guarded(self._on_event, event)

    def _changed(self) -> None:
        if self._on_change is None:
            return
        children = self.snapshot()
        with self._emit_lock:
            self._guarded(self._on_change, children, self._ready)

    def _guarded(self, callback: Callable[..., None], *args: Any) -> None:
        # A failing callback (a closed terminal, a full disk) must not stop the
        # supervision of processes: say so once per callback and go on.
        try:
            callback(*args)
        except Exception:
            if callback not in self._failed_callbacks:
                self._failed_callbacks.append(callback)
                log.warning("supervisor callback %r failed", callback, exc_info=True)

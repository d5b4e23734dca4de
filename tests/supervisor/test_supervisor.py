"""The Supervisor with real child processes (tests/supervisor/child.py)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from devctl.processes import free_port
from devctl.supervisor import RestartPolicy
from tests.supervisor.conftest import FAST, child, gone, kill_pids, supervising, wait_until

# Liveness in fractions of a second: a hang is seen after 3 x (0.2 + 0.3) s at most.
LIVE = replace(FAST, max_crashes=10, liveness_interval=0.2, liveness_timeout=0.3)


def test_each_line_reaches_the_callback_behind_its_childs_name() -> None:
    with supervising([child("one", "lines", 3), child("two", "lines", 2)]) as run:
        wait_until(lambda: len(run.recorder.lines) == 5, what="5 lines")
        outcome = run.stop()
    assert [line for name, line in run.recorder.lines if name == "one"] == [
        "line 0",
        "line 1",
        "line 2",
    ]
    assert [line for name, line in run.recorder.lines if name == "two"] == ["line 0", "line 1"]
    assert outcome.signal is None and outcome.killed == [] and not outcome.all_gave_up
    assert run.recorder.of("stopped", "one")[0].data["returncode"] == 0


def test_a_crashing_child_is_restarted_with_growing_delays(counter: Path) -> None:
    with supervising([child("flaky", "crash", counter, 2)]) as run:
        wait_until(lambda: ("flaky", "running") in run.recorder.lines, what="the third start")
        (state,) = run.supervisor.snapshot()
        run.stop()
    exits = run.recorder.of("exited", "flaky")
    assert [e.data["delay"] for e in exits] == [0.05, 0.1]
    assert [e.data["returncode"] for e in exits] == [3, 3]
    assert "exited (exit code 3)" in exits[0].message
    assert len(run.recorder.of("started", "flaky")) == 3
    assert state.state == "up" and state.restarts == 2 and state.last_exit == "exit code 3"
    # The crash's last line comes before the event that says it exited.
    order = [e.kind for e in run.recorder.events]
    assert order.index("exited") > order.index("started")
    assert [line for _, line in run.recorder.lines] == ["crashing (1)", "crashing (2)", "running"]


def test_gives_up_after_repeated_crashes_and_returns_when_every_essential_child_did() -> None:
    started = time.monotonic()
    with supervising([child("doomed", "exit", 7)]) as run:
        outcome = run.outcome(timeout=20)
    assert outcome.all_gave_up and outcome.gave_up == ["doomed"]
    assert len(run.recorder.of("started")) == FAST.max_crashes
    (gave_up,) = run.recorder.of("gave-up", "doomed")
    assert gave_up.data["crashes"] == FAST.max_crashes
    assert "crashed 4 times within 30s (last: exit code 7); giving up" in gave_up.message
    assert time.monotonic() - started < 10


def test_a_worker_that_gives_up_leaves_the_rest_running() -> None:
    specs = [child("api", "lines", 1), child("worker", "exit", 1, essential=False)]
    with supervising(specs) as run:
        wait_until(lambda: run.recorder.of("gave-up", "worker"), what="the worker's give-up")
        time.sleep(0.2)
        assert run.thread.is_alive()
        states = {s.name: s.state for s in run.supervisor.snapshot()}
        outcome = run.stop()
    assert states == {"api": "up", "worker": "gave-up"}
    assert not outcome.all_gave_up and outcome.gave_up == ["worker"]


def test_a_child_ignoring_sigterm_is_killed_after_its_stop_timeout() -> None:
    with supervising([child("stubborn", "stubborn", stop_timeout=0.5)]) as run:
        wait_until(lambda: run.recorder.lines, what="its first line")
        started = time.monotonic()
        outcome = run.stop()
        took = time.monotonic() - started
    assert outcome.killed == ["stubborn"]
    assert 0.5 <= took < 5
    (killed,) = run.recorder.of("killed", "stubborn")
    assert "did not stop within 0.5s of SIGTERM" in killed.message
    assert "killed by SIGKILL" in run.recorder.of("stopped", "stubborn")[0].message


def test_a_second_stop_kills_at_once() -> None:
    with supervising([child("stubborn", "stubborn", stop_timeout=60)]) as run:
        wait_until(lambda: run.recorder.lines, what="its first line")
        started = time.monotonic()
        run.supervisor.stop()
        wait_until(lambda: run.recorder.of("stopping"), what="the SIGTERM")
        run.supervisor.stop()
        outcome = run.outcome(timeout=10)
    assert outcome.killed == ["stubborn"]
    assert time.monotonic() - started < 5


def test_shutdown_stops_the_api_before_the_consumers() -> None:
    specs = [
        child("consumer", "slowstop", 0, stop_phase=1),
        child("api", "slowstop", 0.5, stop_phase=0),
    ]
    with supervising(specs) as run:
        wait_until(lambda: len(run.recorder.of("started")) == 2, what="both started")
        time.sleep(0.3)  # both have installed their SIGTERM handler
        run.stop()
    steps = [(e.kind, e.child) for e in run.recorder.events if e.kind in ("stopping", "stopped")]
    assert steps == [
        ("stopping", "api"),
        ("stopped", "api"),
        ("stopping", "consumer"),
        ("stopped", "consumer"),
    ]
    lines = run.recorder.lines
    assert lines.index(("api", "stopped")) < lines.index(("consumer", "stopping"))


def test_an_instance_counts_as_up_once_its_health_url_answers() -> None:
    port = free_port()
    spec = child("api-1", "server", port, port=port, health_url=f"http://127.0.0.1:{port}/healthz")
    with supervising([spec]) as run:
        wait_until(lambda: run.recorder.of("all-ready"), what="readiness")
        (state,) = run.supervisor.snapshot()
        run.stop()
    kinds = run.recorder.kinds()
    assert kinds.index("started") < kinds.index("ready") < kinds.index("all-ready")
    assert state.state == "up" and state.port == port
    # The server answered the probe: its request log line came through.
    assert any(line.startswith("request GET /healthz") for _, line in run.recorder.lines)
    assert ("api-1", "draining") in run.recorder.lines


def test_an_instance_that_never_answers_is_stopped_and_restarted() -> None:
    port = free_port()
    spec = child("api-1", "silent", health_url=f"http://127.0.0.1:{port}/healthz")
    policy = RestartPolicy(initial_delay=0.05, ready_timeout=0.5, max_crashes=10)
    with supervising([spec], policy) as run:
        wait_until(lambda: len(run.recorder.of("started")) >= 2, what="a restart")
        run.stop()
    (unhealthy, *_) = run.recorder.of("unhealthy", "api-1")
    assert f"did not answer http://127.0.0.1:{port}/healthz within 0.5s" in unhealthy.message
    assert run.recorder.of("exited", "api-1")
    assert not run.recorder.of("all-ready")


def test_a_hung_instance_is_killed_and_restarted() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    with supervising([child("api-1", "server", port, port=port, health_url=url)], LIVE) as run:
        wait_until(lambda: run.recorder.of("ready", "api-1"), what="readiness")
        (first,) = run.recorder.pids()
        time.sleep(1.0)  # several liveness probes: a live instance passes them
        assert not run.recorder.of("hung")
        os.kill(first, signal.SIGSTOP)  # alive to waitpid, deaf to HTTP: hung
        wait_until(lambda: len(run.recorder.of("ready", "api-1")) == 2, what="the restart")
        (state,) = run.supervisor.snapshot()
        run.stop()
    (hung,) = run.recorder.of("hung", "api-1")
    assert hung.message == (
        f"api-1 (pid {first}) is hung: {url} failed 3 probes in a row "
        "(every 0.2s, last: no answer (timed out)); killing it"
    )
    (exited,) = run.recorder.of("exited", "api-1")
    assert exited.data["returncode"] == -signal.SIGKILL
    assert "api-1 exited (hung, killed by SIGKILL)" in exited.message
    assert gone(first)
    assert state.state == "up" and state.restarts == 1
    assert state.last_exit == "hung, killed by SIGKILL" and state.pid != first


def test_hangs_count_as_crashes_towards_the_give_up() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    spec = child("api-1", "freeze", port, 1.0, port=port, health_url=url)
    with supervising([spec], replace(LIVE, max_crashes=2)) as run:
        outcome = run.outcome(timeout=30)
    assert outcome.all_gave_up and outcome.gave_up == ["api-1"]
    assert len(run.recorder.of("ready", "api-1")) == 2
    assert len(run.recorder.of("hung", "api-1")) == 2
    (gave_up,) = run.recorder.of("gave-up", "api-1")
    assert "crashed 2 times within 30s (last: hung, killed by SIGKILL)" in gave_up.message
    assert all(gone(pid) for pid in run.recorder.pids())


def test_what_a_crashed_child_forked_dies_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    policy = RestartPolicy(initial_delay=30, max_crashes=10)
    with supervising([child("forker", "fork", pidfile)], policy) as run:
        wait_until(lambda: run.recorder.of("exited"), what="the child's exit")
        grandchild = int(pidfile.read_text())
        try:
            wait_until(lambda: gone(grandchild), timeout=5, what="the grandchild's end")
        finally:
            kill_pids([grandchild])
        run.stop()


def test_changed_source_files_restart_the_reloading_children(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    specs = [child("api-1", "lines", 1, reload=True), child("other", "lines", 1)]
    with supervising(specs, watch=[source]) as run:
        wait_until(lambda: len(run.recorder.lines) == 2, what="both lines")
        time.sleep(0.3)  # the watcher is watching
        (source / "module.py").write_text("x = 1\n")
        wait_until(lambda: len(run.recorder.of("started", "api-1")) == 2, what="the reload")
        states = {s.name: s for s in run.supervisor.snapshot()}
        run.stop()
    assert run.recorder.of("reloading", "api-1")
    assert len(run.recorder.of("started", "other")) == 1
    assert states["api-1"].restarts == 0  # a reload is no crash
    assert not run.recorder.of("exited")


def test_state_changes_reach_on_change() -> None:
    with supervising([child("one", "lines", 1)]) as run:
        wait_until(lambda: run.recorder.lines, what="a line")
        run.stop()
    # started, then stopping and stopped at least.
    assert run.recorder.changes >= 3

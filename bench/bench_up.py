"""Benchmark: `devctl up` from nothing to healthy-with-topics, and `devctl test` wall time.

Baselines measured in the same run (the machines are shared and noisy, so the
ratios matter more than the absolute figures):
  - interpreter: `python -c pass`, the floor of any Python CLI;
  - raw start: spawning valkey-server and tansu directly and polling their
    ports until they accept connections, i.e. the servers' own start-up cost.

Usage: python bench/bench_up.py [--runs 7] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_description, replace_section

from devctl.engines.local import find_binary, tansu_argv
from devctl.engines.processes import free_port

SECTION = "Stack start-up (devctl up, devctl test)"


def run(args: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return elapsed


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.005)
    raise SystemExit(f"port {port} never opened")


def raw_start(work: Path) -> float:
    """Start both servers by hand and wait for their ports; the servers' own floor."""
    redis_port, kafka_port = free_port(), free_port()
    valkey = find_binary("redis", None).path
    tansu = find_binary("kafka", None).path
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                valkey,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(work),
                "--appendonly",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            tansu_argv(tansu, kafka_port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        deadline = time.monotonic() + 20
        wait_port(redis_port, deadline)
        wait_port(kafka_port, deadline)
        return time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(work / "appendonlydir", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write", type=Path, help="Markdown file to update with the results.")
    options = parser.parse_args()

    devctl = [sys.executable, "-m", "devctl"]
    with tempfile.TemporaryDirectory(prefix="devctl-bench-") as tmp:
        work = Path(tmp)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
        }
        env.update(
            DEVCTL_DATA_DIR=str(work / "data"),
            DEVCTL_REDIS_PORT=str(free_port()),
            DEVCTL_KAFKA_PORT=str(free_port()),
        )
        interpreter, cli, raw, up, test, down = [], [], [], [], [], []
        try:
            for index in range(options.runs):
                interpreter.append(run([sys.executable, "-c", "pass"], env, work))
                cli.append(run([*devctl, "--version"], env, work))
                raw.append(raw_start(work))
                up.append(run([*devctl, "up"], env, work))
                test.append(run([*devctl, "test"], env, work))
                if index == 0:
                    report = subprocess.run(
                        [*devctl, "test", "--json"],
                        env=env,
                        cwd=work,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    checks = len(json.loads(report.stdout)["checks"])
                down.append(run([*devctl, "down", "--purge", "--yes"], env, work))
                print(
                    f"run {index + 1}: up {up[-1]:.3f}s  test {test[-1]:.3f}s  raw start {raw[-1]:.3f}s",
                    file=sys.stderr,
                )
        finally:
            subprocess.run([*devctl, "down"], env=env, cwd=work, capture_output=True, check=False)

    med = statistics.median
    rows = [
        (
            "`python -c pass` (interpreter floor)",
            med(interpreter),
            min(interpreter),
            max(interpreter),
        ),
        ("`devctl --version` (CLI start-up floor)", med(cli), min(cli), max(cli)),
        ("raw start: both binaries, until their ports accept", med(raw), min(raw), max(raw)),
        ("`devctl up` (start, PING + metadata, 10 topics applied)", med(up), min(up), max(up)),
        (f"`devctl test` ({checks} checks)", med(test), min(test), max(test)),
        ("`devctl down --purge --yes`", med(down), min(down), max(down)),
    ]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()}; "
        f"{options.runs} runs, each `up` after `down --purge` (nothing running, no data).",
        "",
        "| step | median | min | max |",
        "|---|---|---|---|",
        *[f"| {name} | {m:.3f} s | {lo:.3f} s | {hi:.3f} s |" for name, m, lo, hi in rows],
        "",
        f"- `devctl up` median **{med(up):.2f} s** (target <= 2 s); "
        f"{med(up) / med(raw):.1f}x the raw server start and "
        f"{med(up) / med(cli):.1f}x `devctl --version` in the same run.",
        f"- `devctl up` minus the CLI start-up floor: {med(up) - med(cli):.3f} s of real work "
        "(spawning, health polling, reading the binaries' versions, creating the topics).",
        "- The Docker Compose stack this replaces (Redis + Kafka + ZooKeeper containers) takes tens of "
        "seconds to become healthy; that figure is not re-measured here (no Docker engine on these machines).",
        "",
        f"Reproduce: `python bench/bench_up.py --runs {options.runs} --write docs/benchmarks.md`",
    ]
    text = "\n".join(lines)
    print(text)
    if options.write:
        replace_section(options.write, SECTION, text)


if __name__ == "__main__":
    main()

"""Small child programs for the supervisor tests: ``python child.py MODE [ARGS]``.

Modes:
  lines N              print N numbered lines, then wait for SIGTERM (exit 0)
  crash COUNTER N      crash (exit 3) the first N times (counted in the file COUNTER), then run
  exit CODE            exit at once with CODE
  stubborn             ignore SIGTERM; only SIGKILL ends it
  server PORT [READY] [DELAY]  HTTP: /healthz 200, /readyz READY (200 or 503) after DELAY
                       seconds; SIGTERM: "draining", exit 0
  freeze PORT SECONDS  a server that stops itself (SIGSTOP) SECONDS after it started: hung
  slowstop SECONDS     on SIGTERM print "stopping", wait SECONDS, print "stopped", exit 0
  fork PIDFILE         start a grandchild (sleeping) in its group, write its pid, then exit 1
  silent               never listen anywhere (for health timeouts), wait for SIGTERM
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def wait_for_term(on_term: object = None) -> None:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if callable(on_term):
            on_term()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    while not stop.is_set():
        stop.wait(0.05)


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "lines":
        for number in range(int(args[0])):
            print(f"line {number}", flush=True)
        wait_for_term()
        return 0
    if mode == "crash":
        counter, limit = Path(args[0]), int(args[1])
        count = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(count + 1))
        if count < limit:
            print(f"crashing ({count + 1})", flush=True)
            return 3
        print("running", flush=True)
        wait_for_term()
        return 0
    if mode == "exit":
        return int(args[0])
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(1)
    if mode == "server":
        ready = int(args[1]) if len(args) > 1 else 200
        return serve(int(args[0]), ready, float(args[2]) if len(args) > 2 else 0.0)
    if mode == "freeze":
        delay = float(args[1])
        threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()
        return serve(int(args[0]), 200)
    if mode == "slowstop":
        delay = float(args[0])
        wait_for_term(lambda: print("stopping", flush=True))
        time.sleep(delay)
        print("stopped", flush=True)
        return 0
    if mode == "fork":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path(args[0]).write_text(str(grandchild.pid))
        return 1
    if mode == "silent":
        wait_for_term()
        return 0
    raise SystemExit(f"unknown mode {mode}")


def serve(port: int, ready: int, ready_delay: float = 0.0) -> int:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif self.path == "/readyz":
                time.sleep(ready_delay)  # like dependencies that answer slowly, or time out
                state = "ok" if ready == 200 else "degraded"
                checks = {
                    "redis": {"status": "ok"},
                    "database": {"status": "error", "error": "down"},
                }
                if ready == 200:
                    checks["database"] = {"status": "ok"}
                status, body = ready, {"status": state, "checks": checks}
            else:
                status, body = 404, {}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            print(f"request {args[0]}", flush=True)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {port} (pid {os.getpid()})", flush=True)

    def stop() -> None:
        print("draining", flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, lambda *_: stop())
    server.serve_forever(poll_interval=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())

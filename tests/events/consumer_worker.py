"""A consumer process for the crash tests: each event's effect is an RPUSH of its id.

    python consumer_worker.py GROUP TOPIC EFFECTS_KEY [--block-at K] [--batch-size N]

Runs the real runtime (group subscription, idempotency guard, signals). With
``--block-at K`` the handler of the (K+1)-th event sets ``EFFECTS_KEY:blocked``
and hangs, so a test can kill the process at a known point: K events handled,
some of them not yet committed. Prints the counters as JSON when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from devctl.config.loader import load_settings
from devctl.engines import select_engine
from devctl.events.consumer import ConsumerRuntime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("effects")
    parser.add_argument("--block-at", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    settings = load_settings(environ=dict(os.environ))
    endpoints = select_engine(settings).endpoints()
    runtime = ConsumerRuntime(
        endpoints, settings, group=args.group, topics=[args.topic], batch_size=args.batch_size
    )
    handled = 0

    @runtime.handler("devconnect.analytics.activity")
    def effect(event: Any, ctx: Any) -> None:
        nonlocal handled
        if args.block_at is not None and handled == args.block_at:
            runtime.redis.set(f"{args.effects}:blocked", "1")  # type: ignore[union-attr]
            time.sleep(3600)
        ctx.tx.rpush(args.effects, event.id)
        time.sleep(0.002)  # a little work, so a kill lands mid-stream
        handled += 1

    counters = runtime.run()
    print(json.dumps(counters.as_dict()), flush=True)


if __name__ == "__main__":
    sys.exit(main())

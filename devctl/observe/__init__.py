"""Observing the running DevConnect system: one snapshot of every source, and rates.

``Observer`` (``devctl.observe.snapshot``) reads Kafka (topic end offsets, consumer
groups), Redis (presence, INFO), each API instance's ``/metrics``, the outbox and
the newest events, each in a thread with a deadline, and turns two readings into
rates (``devctl.observe.rates``). No printing here: `devctl top` renders what it
returns, and any other front end may too. See docs/top.md.
"""

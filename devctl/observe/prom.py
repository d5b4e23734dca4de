"""Reading an API instance's ``/metrics`` (Prometheus text) into per-route counters.

Only the request counter and the latency histogram of ``devctl.api.metrics`` are
kept; everything else an instance exposes is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The names devctl.api.metrics.ApiMetrics registers (the counter's samples get _total).
REQUESTS = "devconnect_http_requests"
LATENCY = "devconnect_http_request_duration_seconds"

Route = tuple[str, str]  # (method, route template)


@dataclass
class RouteCounters:
    """Cumulative numbers of one (method, route) since the instance started."""

    requests: float = 0.0
    errors: float = 0.0  # answers with a 5xx status
    # Cumulative histogram buckets: (upper bound in seconds, count), sorted; +Inf last.
    buckets: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Scrape:
    routes: dict[Route, RouteCounters] = field(default_factory=dict)


def parse_metrics(text: str) -> Scrape:
    """The request counters and latency buckets per route in an exposition text.

    Raises ValueError for text that is not Prometheus' format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    out = Scrape()
    buckets: dict[Route, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUESTS, LATENCY):
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("method", "GET"), labels.get("route", "unmatched"))
            if family.name == REQUESTS and sample.name == f"{REQUESTS}_total":
                counters = out.routes.setdefault(key, RouteCounters())
                counters.requests += sample.value
                if labels.get("status", "").startswith("5"):
                    counters.errors += sample.value
            elif family.name == LATENCY and sample.name == f"{LATENCY}_bucket":
                bound = float(labels.get("le", "+Inf"))
                buckets.setdefault(key, {})[bound] = sample.value
    for key, by_bound in buckets.items():
        counters = out.routes.setdefault(key, RouteCounters())
        counters.buckets = sorted(by_bound.items(), key=lambda item: item[0])
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative ``buckets`` (upper bound, count), in seconds.

    As Prometheus' histogram_quantile: linear within the bucket it falls in, from the
    bucket below's bound (0 for the first). In the +Inf bucket the answer is the
    highest finite bound (no upper bound is known). None without observations.
    """
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, count
    return lower_bound

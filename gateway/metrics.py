"""Data-plane counters: plain integers bumped once per finished exchange (no locks, no I/O on
the hot path). Each worker hands snapshots to the admin side, which adds them up and renders
Prometheus text when scraped."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Upper bounds in seconds of the upstream-latency histogram (time to the response head).
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOUNDS_MS = tuple(b * 1000.0 for b in LATENCY_BOUNDS)


class PlaneMetrics:
    __slots__ = ("auth_failures", "by_class", "latency_buckets", "latency_count", "latency_sum_ms")

    def __init__(self) -> None:
        self.by_class = [
            0
        ] * 6  # index = status // 100; 0 = no response (499: the client went away)
        self.auth_failures: dict[str, int] = {}
        self.latency_buckets = [0] * (len(_BOUNDS_MS) + 1)  # last = +Inf
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def observe(
        self, status: int, reason: str | None, upstream_ms: float, auth_failed: bool
    ) -> None:
        # 499: the client left before an answer (nginx's code): no class, as nothing was sent.
        self.by_class[status // 100 if 100 <= status < 600 and status != 499 else 0] += 1
        if auth_failed and reason is not None:
            self.auth_failures[reason] = self.auth_failures.get(reason, 0) + 1
        if upstream_ms >= 0.0:
            self.latency_buckets[bisect_left(_BOUNDS_MS, upstream_ms)] += 1
            self.latency_sum_ms += upstream_ms
            self.latency_count += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data, so another process can add it up (see `merge`)."""
        return {
            "by_class": list(self.by_class),
            "auth_failures": dict(self.auth_failures),
            "latency_buckets": list(self.latency_buckets),
            "latency_sum_ms": self.latency_sum_ms,
            "latency_count": self.latency_count,
        }


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total = PlaneMetrics().snapshot()
    for snap in snapshots:
        total["by_class"] = [
            a + b for a, b in zip(total["by_class"], snap["by_class"], strict=True)
        ]
        for reason, count in snap["auth_failures"].items():
            total["auth_failures"][reason] = total["auth_failures"].get(reason, 0) + count
        total["latency_buckets"] = [
            a + b for a, b in zip(total["latency_buckets"], snap["latency_buckets"], strict=True)
        ]
        total["latency_sum_ms"] += snap["latency_sum_ms"]
        total["latency_count"] += snap["latency_count"]
    return total


PROPAGATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Seconds, in PROPAGATION_BOUNDS buckets (the admin side's propagation latency)."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(PROPAGATION_BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(PROPAGATION_BOUNDS, seconds)] += 1
        self.sum += seconds


@dataclass
class Gauges:
    keys_cached: int = 0
    store_write_lag_seconds: float = 0.0
    connections_open: int = 0
    workers: int = 1
    applied_revision: int = 0  # the laggiest data plane's change-log position
    # Fleet (PostgreSQL) only; None on one host.
    staleness_seconds: float | None = None
    instances_live: int | None = None
    propagation: Histogram | None = None
    webhook_outcomes: dict[str, int] | None = None  # attempts by outcome
    outbox_depth: int = 0
    outbox_oldest_seconds: float = 0.0


class _Collector(Collector):
    def __init__(self, counters: dict[str, Any], gauges: Gauges) -> None:
        self.c = counters
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        c = self.c
        requests = CounterMetricFamily(
            "gateway_requests",
            "Data-plane requests by status class (none: the client left before any answer)",
            labels=["class"],
        )
        for i, count in enumerate(c["by_class"]):
            requests.add_metric(["none" if i == 0 else f"{i}xx"], count)
        yield requests
        failures = CounterMetricFamily(
            "gateway_auth_failures", "Requests refused with 401, by reason", labels=["reason"]
        )
        for reason, count in sorted(c["auth_failures"].items()):
            failures.add_metric([reason], count)
        yield failures
        cumulative = []
        running = 0
        for bound, count in zip((*LATENCY_BOUNDS, float("inf")), c["latency_buckets"], strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            "gateway_upstream_latency_seconds",
            "Time from sending a request upstream to its response head",
            buckets=cumulative,
            sum_value=c["latency_sum_ms"] / 1000.0,
        )
        g = self.gauges
        yield GaugeMetricFamily(
            "gateway_keys_cached", "Keys in the in-memory index", value=g.keys_cached
        )
        yield GaugeMetricFamily(
            "gateway_store_write_lag_seconds",
            "Age of the oldest key-usage update not yet written to the store",
            value=g.store_write_lag_seconds,
        )
        yield GaugeMetricFamily(
            "gateway_connections_open",
            "Open data-plane client connections",
            value=g.connections_open,
        )
        yield GaugeMetricFamily(
            "gateway_workers", "Data-plane worker processes running", value=g.workers
        )
        yield GaugeMetricFamily(
            "gateway_store_applied_revision",
            "Change-log position applied by the in-memory index (the laggiest worker's)",
            value=g.applied_revision,
        )
        if g.staleness_seconds is not None:
            yield GaugeMetricFamily(
                "gateway_store_staleness_seconds",
                "Seconds since the last confirmed contact with the store (the worst worker's); "
                "keyed requests get 503 past store.max_staleness",
                value=g.staleness_seconds,
            )
        if g.instances_live is not None:
            yield GaugeMetricFamily(
                "gateway_fleet_instances_live",
                "Data planes with a heartbeat within store.node_timeout, fleet-wide",
                value=g.instances_live,
            )
        if g.webhook_outcomes is not None:
            attempts = CounterMetricFamily(
                "gateway_webhook_attempts",
                "Webhook delivery attempts by outcome (retried: failed, another try scheduled)",
                labels=["outcome"],
            )
            for outcome, count in sorted(g.webhook_outcomes.items()):
                attempts.add_metric([outcome], count)
            yield attempts
            yield GaugeMetricFamily(
                "gateway_webhook_outbox_depth",
                "Webhook deliveries pending",
                value=g.outbox_depth,
            )
            yield GaugeMetricFamily(
                "gateway_webhook_oldest_pending_seconds",
                "Age of the oldest pending webhook delivery",
                value=g.outbox_oldest_seconds,
            )
        if g.propagation is not None:
            running = 0
            buckets = []
            for bound, count in zip(
                (*PROPAGATION_BOUNDS, float("inf")), g.propagation.buckets, strict=True
            ):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            yield HistogramMetricFamily(
                "gateway_propagation_seconds",
                "From an admin change's commit to its confirmation by every live instance",
                buckets=buckets,
                sum_value=g.propagation.sum,
            )


def render(counters: dict[str, Any], gauges: Gauges) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counters, gauges))
    return generate_latest(registry)

"""Data-plane counters: plain integers bumped once per finished exchange (no locks, no I/O on
the hot path); the admin port renders them in Prometheus text format when scraped."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Upper bounds in seconds of the upstream-latency histogram (time to the response head).
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOUNDS_MS = tuple(b * 1000.0 for b in LATENCY_BOUNDS)


class PlaneMetrics:
    __slots__ = ("auth_failures", "by_class", "latency_buckets", "latency_count", "latency_sum_ms")

    def __init__(self) -> None:
        self.by_class = [0] * 6  # index = status // 100; 0 = no response (client went away)
        self.auth_failures: dict[str, int] = {}
        self.latency_buckets = [0] * (len(_BOUNDS_MS) + 1)  # last = +Inf
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def observe(
        self, status: int, reason: str | None, upstream_ms: float, auth_failed: bool
    ) -> None:
        self.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        if auth_failed and reason is not None:
            self.auth_failures[reason] = self.auth_failures.get(reason, 0) + 1
        if upstream_ms >= 0.0:
            self.latency_buckets[bisect_left(_BOUNDS_MS, upstream_ms)] += 1
            self.latency_sum_ms += upstream_ms
            self.latency_count += 1


@dataclass
class Gauges:
    keys_cached: int = 0
    store_write_lag_seconds: float = 0.0
    connections_open: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class _Collector(Collector):
    def __init__(self, planes: Iterable[PlaneMetrics], gauges: Gauges) -> None:
        self.planes = list(planes)
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "gateway_requests", "Data-plane responses by status class", labels=["class"]
        )
        totals = [sum(p.by_class[i] for p in self.planes) for i in range(6)]
        for i, count in enumerate(totals):
            requests.add_metric(["none" if i == 0 else f"{i}xx"], count)
        yield requests
        failures = CounterMetricFamily(
            "gateway_auth_failures", "Requests refused with 401, by reason", labels=["reason"]
        )
        merged: dict[str, int] = {}
        for p in self.planes:
            for reason, count in p.auth_failures.items():
                merged[reason] = merged.get(reason, 0) + count
        for reason, count in sorted(merged.items()):
            failures.add_metric([reason], count)
        yield failures
        buckets = [
            sum(p.latency_buckets[i] for p in self.planes) for i in range(len(LATENCY_BOUNDS) + 1)
        ]
        cumulative = []
        running = 0
        for bound, count in zip((*LATENCY_BOUNDS, float("inf")), buckets, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        latency = HistogramMetricFamily(
            "gateway_upstream_latency_seconds",
            "Time from sending a request upstream to its response head",
            buckets=cumulative,
            sum_value=sum(p.latency_sum_ms for p in self.planes) / 1000.0,
        )
        yield latency
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


def render(planes: Iterable[PlaneMetrics], gauges: Gauges) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(planes, gauges))
    return generate_latest(registry)

"""Request counts and latencies, in Prometheus text format.

The metric names are TF Serving's (``:tensorflow:serving:request_count`` and
``:tensorflow:serving:request_latency``, the latter in microseconds), so
dashboards built for TF Serving read this server too; a ``version`` label is
added. ``entrypoint`` is ``REST`` or ``GRPC``; ``API`` names the call the same way on
both (``predict``, ``classify``, ``regress``, ``status``, ``metadata``, and on gRPC
also ``multi_inference`` and ``reload_config``). Only known models get their own
series: requests for unknown models are counted under ``model_name=""`` so hostile
clients cannot grow the label set.
"""

from __future__ import annotations

import bisect
import threading

# Latency histogram bucket upper bounds, in microseconds.
BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
              500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)

_COUNT = ":tensorflow:serving:request_count"
_LATENCY = ":tensorflow:serving:request_latency"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters and histograms keyed by model, version, API and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str, str], list] = {}

    def observe(self, model: str, version: str, api: str, status: str, seconds: float,
                entrypoint: str = "REST") -> None:
        """Records one request; ``status`` is a TF error code name (``OK``, ...).

        ``entrypoint`` is ``REST`` or ``GRPC``, TF Serving's label for the API a request
        came in on.
        """
        micros = seconds * 1e6
        with self._lock:
            key = (model, version, api, entrypoint, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            series = (model, version, api, entrypoint)
            hist = self._latency.get(series)
            if hist is None:
                hist = self._latency[series] = [[0] * len(BUCKETS_US), 0, 0.0]
            index = bisect.bisect_left(BUCKETS_US, micros)
            if index < len(BUCKETS_US):
                hist[0][index] += 1
            hist[1] += 1
            hist[2] += micros

    def render(self) -> str:
        """The exposition text for ``/monitoring/prometheus/metrics``."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._latency.items())
        lines = [f"# HELP {_COUNT} The total number of requests.",
                 f"# TYPE {_COUNT} counter"]
        for (model, version, api, entrypoint, status), n in counts:
            lines.append(f'{_COUNT}{{model_name="{_escape(model)}",version="{_escape(version)}",'
                         f'API="{api}",entrypoint="{entrypoint}",status="{status}"}} {n}')
        lines += [f"# HELP {_LATENCY} Distribution of wall time (in microseconds) for "
                  "requests.",
                  f"# TYPE {_LATENCY} histogram"]
        for (model, version, api, entrypoint), (buckets, total, micros) in latency:
            labels = (f'model_name="{_escape(model)}",version="{_escape(version)}",'
                      f'API="{api}",entrypoint="{entrypoint}"')
            cumulative = 0
            for bound, n in zip(BUCKETS_US, buckets, strict=True):
                cumulative += n
                lines.append(f'{_LATENCY}_bucket{{{labels},le="{bound}"}} {cumulative}')
            lines.append(f'{_LATENCY}_bucket{{{labels},le="+Inf"}} {total}')
            lines.append(f"{_LATENCY}_sum{{{labels}}} {micros:.1f}")
            lines.append(f"{_LATENCY}_count{{{labels}}} {total}")
        return "\n".join(lines) + "\n"

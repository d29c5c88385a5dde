"""``/metrics``: what an operator's Prometheus scrapes, in its text exposition format.

Counters move with the events they count (the runtime's parts call :meth:`Metrics.count`);
gauges are read from the parts when scraped, so they are never stale. Small enough to keep
without a client library: a few families, a handful of labels each.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

# Task durations, in seconds: from a quick job to a long upload.
TASK_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, math.inf)

Labels = tuple[tuple[str, str], ...]

_HELP = {
    "labrt_sessions_started_total": ("counter", "Sessions admitted, by RLMS dialect."),
    "labrt_sessions_ended_total": ("counter", "Sessions ended, by reason."),
    "labrt_rlms_requests_total": ("counter", "Requests from the RLMS, by endpoint and status."),
    "labrt_task_duration_seconds": ("histogram", "How long finished tasks ran."),
    "labrt_driver_errors_total": ("counter", "Device faults and failed safe() calls, by device."),
    "labrt_sessions_active": ("gauge", "Sessions starting or running now."),
    "labrt_websocket_pages": ("gauge", "Pages connected over WebSocket now."),
    "labrt_loop_lag_seconds": ("gauge", "How late the event loop last woke up."),
    "labrt_camera_streaming": ("gauge", "1 while a camera's pictures flow, by camera."),
    "labrt_camera_fps": ("gauge", "Pictures per second a camera sends on, by camera."),
    "labrt_camera_viewers": ("gauge", "Streams and snapshots watching a camera now, by camera."),
    "labrt_stray_calls": (
        "gauge",
        "Calls of the lab's code still running for a session that has ended, by what.",
    ),
}


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return f"{{{inner}}}" if inner else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[Labels, list[float]] = {}  # bucket counts, then sum
        self._gauges: dict[str, Callable[[], float]] = {}
        self._labelled: dict[str, tuple[str, Callable[[], dict[str, float]]]] = {}

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        family = self._counters[name]
        key = _labels(labels)
        family[key] = family.get(key, 0) + amount

    def observe_task(self, seconds: float, name: str) -> None:
        key = _labels({"task": name})
        row = self._histograms.setdefault(key, [0.0] * (len(TASK_BUCKETS) + 1))
        for i, bound in enumerate(TASK_BUCKETS):
            if seconds <= bound:
                row[i] += 1
        row[-1] += seconds

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def labelled_gauge(self, name: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        """A gauge with one label, read when scraped: ``read()`` maps label values to values
        (a label value that is absent has no sample)."""
        self._labelled[name] = (label, read)

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "counter":
                for key, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_render(key)} {_number(value)}")
            elif kind == "gauge" and name in self._gauges:
                lines.append(f"{name} {_number(self._gauges[name]())}")
            elif kind == "gauge" and name in self._labelled:
                label, read = self._labelled[name]
                for label_value, number in sorted(read().items()):
                    lines.append(f"{name}{_render([(label, label_value)])} {_number(number)}")
            elif kind == "histogram":
                for key, row in sorted(self._histograms.items()):
                    for bound, count in zip(TASK_BUCKETS, row, strict=False):
                        bucket = _render((*key, ("le", _number(bound))))
                        lines.append(f"{name}_bucket{bucket} {_number(count)}")
                    total = row[len(TASK_BUCKETS) - 1]  # the +Inf bucket holds every one
                    lines.append(f"{name}_sum{_render(key)} {_number(row[-1])}")
                    lines.append(f"{name}_count{_render(key)} {_number(total)}")
        return "\n".join(lines) + "\n"

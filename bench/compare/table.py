"""From repeats to the one table: the median of each metric with its min..max spread, the
ratio labrt/weblablib of the medians, and each target of issue 8 checked; written as JSON (every
raw value kept) and Markdown."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Runs = dict[str, dict[str, list[float]]]  # target name → metric → one value per repeat
LABRT, WEBLABLIB, PUSH_REF, HELLO = "labrt", "weblablib", "weblablib-socketio", "aiohttp-hello"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    digits: int = 1
    reference: str = WEBLABLIB  # which target labrt is compared with on this row
    target: str = ""  # issue 8's target for this row, in words
    check: Callable[[float], bool] | None = None  # applied to the ratio (or labrt's value)
    absolute: bool = False  # the check applies to labrt's own value, not the ratio


ROWS = [
    Row("start_seq_p50_ms", "session start, sequential: latency p50 (ms)", 2),
    Row("start_seq_per_s", "session start, sequential: sessions/s"),
    Row(
        "start_conc_per_s",
        "session start, 20 concurrent: sessions/s",
        target="≥ 2x",
        check=lambda r: r >= 2,
    ),
    Row(
        "start_conc_p50_ms",
        "session start, 20 concurrent: latency p50 (ms)",
        2,
        target="≤ 1/2",
        check=lambda r: r <= 1 / 2,
    ),
    Row(
        "status_rps",
        "status poll, 100 live sessions: req/s",
        0,
        target="≥ 5x",
        check=lambda r: r >= 5,
    ),
    Row("status_p99_ms", "status poll: p99 (ms)", 2),
    Row("multiple_rps", "status/multiple, 100 ids: req/s", 0),
    Row("active_rps", "@requires_active view, 50 users: req/s", 0),
    Row("active_p50_ms", "@requires_active view: p50 (ms)", 2),
    Row(
        "active_p99_ms",
        "@requires_active view: p99 (ms)",
        2,
        target="≤ 1/3",
        check=lambda r: r <= 1 / 3,
    ),
    Row(
        "task_p50_ms",
        "task submit→done: p50 (ms)",
        2,
        target="≤ 1/100",
        check=lambda r: r <= 1 / 100,
    ),
    Row("task_p99_ms", "task submit→done: p99 (ms)", 2),
    Row("task_seen_p50_ms", "task submit→seen done by 1 ms polls: p50 (ms)", 2),
    Row("tasks_per_s", "tasks/s (100 submitted at once)"),
    Row("push_p50_ms", "push to the page: p50 (ms)", 2, reference=PUSH_REF),
    Row(
        "push_p99_ms",
        "push to the page: p99 (ms)",
        2,
        reference=PUSH_REF,
        target="≤ 5 ms",
        check=lambda v: v <= 5,
        absolute=True,
    ),
    Row("push_users_p50_ms", "push, 50 students at once: p50 (ms)", 2, reference=PUSH_REF),
    Row("push_users_p99_ms", "push, 50 students at once: p99 (ms)", 2, reference=PUSH_REF),
    Row(
        "rss_idle_mb", "whole-stack RSS, idle (MiB)", 1, target="≤ 1/3", check=lambda r: r <= 1 / 3
    ),
    Row("pss_idle_mb", "whole-stack PSS, idle (MiB)"),
    Row(
        "rss_load_mb",
        "whole-stack RSS, under load (MiB)",
        1,
        target="≤ 1/3",
        check=lambda r: r <= 1 / 3,
    ),
    Row("pss_load_mb", "whole-stack PSS, under load (MiB)"),
    Row(
        "cold_start_s",
        "cold start to first /weblab/sessions/api (s)",
        3,
        target="≤ 1/2",
        check=lambda r: r <= 1 / 2,
    ),
    Row("past_10_p50_ms", "status latency p50, 10 past sessions (ms)", 3),
    Row("past_10k_p50_ms", "status latency p50, 10k past sessions (ms)", 3),
    Row("past_100k_p50_ms", "status latency p50, 100k past sessions (ms)", 3),
    Row("past_100k_p99_ms", "status latency p99, 100k past sessions (ms)", 3),
    Row("cold_start_100k_s", "cold start with 100k past sessions (s)", 3),
]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _cell(values: list[float] | None, digits: int) -> str:
    if not values:
        return "n/a"
    s = summary(values)
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def _median(runs: Runs, target: str, key: str) -> float | None:
    values = runs.get(target, {}).get(key)
    return statistics.median(values) if values else None


def checks(runs: Runs) -> list[dict[str, Any]]:
    """Each target of issues 8 and 19: the number it is judged on, and whether it is met."""
    found = []
    for row in ROWS:
        if row.check is None:
            continue
        mine, theirs = _median(runs, LABRT, row.key), _median(runs, row.reference, row.key)
        value = mine if row.absolute else (mine / theirs if mine and theirs else None)
        found.append(
            {
                "metric": row.key,
                "target": row.target,
                "value": value,
                "met": None if value is None else row.check(value),
            }
        )
    # Targets on a ratio of two medians: (metric, numerator, denominator, target, check).
    ratios = (
        (
            "past_100k_p50_ms / past_10_p50_ms (labrt)",
            (LABRT, "past_100k_p50_ms"),
            (LABRT, "past_10_p50_ms"),
            "≤ 1.2",
            lambda v: v <= 1.2,
        ),
        (
            "cold_start_100k_s / cold_start_s (labrt)",
            (LABRT, "cold_start_100k_s"),
            (LABRT, "cold_start_s"),
            "≤ 1.2",
            lambda v: v <= 1.2,
        ),
        (
            "labrt status_rps / aiohttp hello-world req/s",
            (LABRT, "status_rps"),
            (HELLO, "status_rps"),
            "≥ 0.6",
            lambda v: v >= 0.6,
        ),
    )
    for metric, top, bottom, target, check in ratios:
        numerator, denominator = _median(runs, *top), _median(runs, *bottom)
        if numerator and denominator:
            value = numerator / denominator
            found.append({"metric": metric, "target": target, "value": value, "met": check(value)})
    return found


def markdown(runs: Runs) -> str:
    lines = [
        "| metric | labrt | weblablib | labrt/weblablib | target |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        mine = runs.get(LABRT, {}).get(row.key)
        theirs = runs.get(row.reference, {}).get(row.key)
        if not mine and not theirs:
            continue
        ratio = "n/a"
        if mine and theirs and statistics.median(theirs):
            ratio = f"{statistics.median(mine) / statistics.median(theirs):.3g}"
        target = row.target
        if row.check is not None and mine:
            value = statistics.median(mine) if row.absolute else None
            if not row.absolute and theirs:
                value = statistics.median(mine) / statistics.median(theirs)
            if value is not None:
                target += " ✔" if row.check(value) else " ✘"
        label = row.label + (" [Flask-SocketIO form]" if row.reference == PUSH_REF else "")
        lines.append(
            f"| {label} | {_cell(mine, row.digits)} | {_cell(theirs, row.digits)} | {ratio} "
            f"| {target} |"
        )
    hello = runs.get(HELLO, {}).get("status_rps")
    if hello:
        lines.append(
            f"| bare aiohttp hello-world, same wrk load: req/s | {_cell(hello, 0)} | | | |"
        )
    lines += ["", "| other target | value | met |", "|---|---|---|"]
    for c in checks(runs):
        if c["metric"] in (
            "past_100k_p50_ms / past_10_p50_ms (labrt)",
            "cold_start_100k_s / cold_start_s (labrt)",
            "labrt status_rps / aiohttp hello-world req/s",
        ):
            shown = "n/a" if c["value"] is None else f"{c['value']:.3g}"
            lines.append(f"| {c['metric']} {c['target']} | {shown} | {'✔' if c['met'] else '✘'} |")
    return "\n".join(lines) + "\n"


def write(directory: Path, stem: str, runs: Runs, meta: dict[str, Any]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        **meta,
        "runs": runs,
        "medians": {t: {k: summary(v) for k, v in m.items() if v} for t, m in runs.items()},
        "targets": checks(runs),
    }
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    md_path = directory / f"{stem}.md"
    header = f"# {meta['title']}\n\n{meta['machine_text']}\n\n`{meta['command']}`\n\n"
    camera = directory / "camera.json"
    tail = camera_fanout(json.loads(camera.read_text())) if camera.exists() else ""
    md_path.write_text(header + markdown(runs) + tail)
    return json_path, md_path


# The camera's rows: (key in bench/camera.py's results, label, digits).
CAMERA_ROWS = (
    ("fps_min", "delivered fps, slowest viewer", 1),
    ("latency_p99_ms", "added latency p99 (ms)", 2),
    ("cpu_per_viewer_pct", "server CPU per viewer (% of a core)", 2),
)


def camera_fanout(document: dict[str, Any]) -> str:
    """The camera's fan-out rows, from bench/camera.py's last run (results/camera.json): a
    weblablib lab has no camera of its own, so the reference is the MJPEG route of the Flask
    tutorials under gunicorn, as such labs serve one."""
    results = document["results"]
    lines = [
        "",
        f"## Camera fan-out (`bench/camera.py --repeats {document['repeats']} --seconds "
        f"{document['seconds']:g}`, {document['started'][:16].replace('T', ' ')} UTC)",
        "",
        "| viewers | metric | labrt | Flask + gunicorn gthread | labrt/flask |",
        "|---|---|---|---|---|",
    ]
    for viewers in document["viewers"]:
        for key, label, digits in CAMERA_ROWS:
            mine = [r[key] for r in results["labrt"][str(viewers)]]
            theirs = [r[key] for r in results["flask"][str(viewers)]]
            ratio = statistics.median(mine) / statistics.median(theirs)
            lines.append(
                f"| {viewers} | {label} | {_cell(mine, digits)} | {_cell(theirs, digits)} "
                f"| {ratio:.3g} |"
            )
    return "\n".join(lines) + "\n"

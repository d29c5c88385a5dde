"""Input edge → author callback latency, on gpiozero's mock pins.

A foreign thread drives a mock pin, as the pin library's callback thread does on a Pi; the
driver hands the edge to the loop, which calls the author's callback (sync: in the default
executor; async: on the loop) or wakes an ``async for`` consumer. The mock pins cost nothing,
so this is labrt's own overhead, not the kernel's:

    python bench/edges.py [--repeats 5] [--edges 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

from gpiozero.pins.mock import MockFactory
from report import percentile, print_medians

from drivers import Environment, Input


async def measure(way: str, env: Environment, edges: int) -> tuple[float, float]:
    """p50 and p99 in microseconds, edges consumed ``way``."""
    loop = asyncio.get_running_loop()
    button = Input("button", Input.validate({"pin": 4, "bounce_time": 0}), env)
    button.open()
    seen = threading.Event()
    latencies: list[float] = []
    sent = [0.0]

    def note(_edge: object = None) -> None:
        latencies.append(time.perf_counter() - sent[0])
        seen.set()

    async def note_async(edge: object) -> None:
        note(edge)

    async def consume() -> None:
        async for edge in button.events():
            note(edge)

    consumer = None
    if way == "sync callback":
        button.when_activated = button.when_deactivated = note
    elif way == "async callback":
        button.when_activated = button.when_deactivated = note_async
    else:
        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0)  # subscribed before the first edge

    def drive() -> None:
        pin = env.pin_factory.pin(4)
        for i in range(edges):
            seen.clear()
            sent[0] = time.perf_counter()
            if i % 2 == 0:
                pin.drive_low()  # pulled up: low is active
            else:
                pin.drive_high()
            seen.wait(5)

    try:
        await loop.run_in_executor(None, drive)
    finally:
        if consumer is not None:
            consumer.cancel()
        button.close()
    latencies.sort()
    return statistics.median(latencies) * 1e6, percentile(latencies, 0.99) * 1e6


async def one_repeat(edges: int) -> dict[str, tuple[float, float]]:
    env = Environment(loop=asyncio.get_running_loop(), pin_factory=MockFactory(), mock=True)
    return {
        way: await measure(way, env, edges)
        for way in ("sync callback", "async callback", "async for")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--edges", type=int, default=1000)
    args = parser.parse_args()
    runs = [asyncio.run(one_repeat(args.edges)) for _ in range(args.repeats)]
    print_medians(["consumer", "edge→callback p50 µs", "p99 µs"], runs, digits=0)


if __name__ == "__main__":
    main()

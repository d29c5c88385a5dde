"""Push latency: server event → page, with 1, 100 and 1000 pages connected.

Starts a real ``labrt run`` (bench/labs/push_lab.py, spectators on, a mock input) in its own
process, connects the pages from this process, and measures, on the machine's monotonic
clock, from the moment the lab pushes (or a foreign thread flips the input's pin) to the
moment each page has the message:

    python bench/push.py [--repeats 5] [--messages 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from report import percentile, print_medians

HERE = Path(__file__).resolve().parent
CONFIG = """
[lab]
name = "push-bench"
module = "{module}"
spectators = true
[server]
port = 0
[rlms]
username = "bench"
password = "a-bench-password"
[store]
path = "{store}"
[push]
send_queue = 10000
messages_per_second = 1000
[hardware]
pins = "mock"
[drivers.button]
kind = "gpio.input"
pin = 4
bounce_time = 0
"""


def start_lab(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "lab.toml"
    config.write_text(
        CONFIG.format(module=HERE / "labs" / "push_lab.py", store=workdir / "bench.sqlite")
    )
    log = (workdir / "lab.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "labrt", "run", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)
        found = re.search(r"listening on (http://\S+)", (workdir / "lab.log").read_text())
        if found:
            return process, found.group(1)
    process.kill()
    raise SystemExit(f"the lab did not start:\n{(workdir / 'lab.log').read_text()}")


async def measure(url: str, pages: int, messages: int, what: str) -> tuple[float, float]:
    """p50 and p99 latency in ms over every message at every page."""
    latencies: list[float] = []
    event = "stamp" if what == "push" else "edge"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = await asyncio.gather(*(http.ws_connect(f"{url}/labrt/ws") for _ in range(pages)))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            seen = 0
            while seen < messages:
                frame = await ws.receive()
                now = time.monotonic()
                message = json.loads(frame.data)
                if message["event"] == event:
                    latencies.append(now - message["data"]["sent"])
                    seen += 1

        readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
        path = "/bench/broadcast" if what == "push" else "/bench/edges"
        gap = max(0.01, pages / 20000)  # let each message reach every page before the next
        async with http.post(f"{url}{path}?count={messages}&gap={gap}") as r:
            assert r.status == 200, await r.text()
        await asyncio.wait_for(asyncio.gather(*readers), 120)
        await asyncio.gather(*(ws.close() for ws in sockets))
    latencies.sort()
    return percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        process, url = start_lab(Path(scratch))
        try:
            for _ in range(args.repeats):
                run = {}
                for pages in (1, 100, 1000):
                    run[f"push, {pages} pages"] = asyncio.run(
                        measure(url, pages, args.messages, "push")
                    )
                run["edge→page, 1 page"] = asyncio.run(measure(url, 1, args.messages, "edge"))
                runs.append(run)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    print_medians(["pages", "latency p50 ms", "p99 ms"], runs)


if __name__ == "__main__":
    main()

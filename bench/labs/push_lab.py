"""The lab bench/push.py drives: it stamps what it pushes with the monotonic clock, which the
bench's client process shares (CLOCK_MONOTONIC is one clock for the whole machine)."""

import asyncio
import threading
import time

from labrt import Lab

lab = Lab()


@lab.route("POST", "/bench/broadcast")
async def broadcast(request):
    """Push ``count`` stamped messages to every page, ``gap`` seconds apart."""
    count = int(request.query["count"])
    gap = float(request.query["gap"])
    for i in range(count):
        await lab.broadcast("stamp", {"i": i, "sent": time.monotonic()})
        await asyncio.sleep(gap)
    return {"sent": count}


@lab.route("POST", "/bench/edges")
async def edges(request):
    """Drive the mock button ``count`` times from a foreign thread; its callback pushes."""
    count = int(request.query["count"])
    gap = float(request.query["gap"])
    button = lab.hardware["button"]
    pin = button.env.pin_factory.pin(button.options["pin"])
    stamps = {}

    def pushed(edge):
        lab.broadcast("edge", {"sent": stamps.pop("t")})

    button.when_activated = button.when_deactivated = pushed

    def drive():
        for i in range(count):
            stamps["t"] = time.monotonic()
            pin.drive_low() if i % 2 == 0 else pin.drive_high()
            time.sleep(gap)

    await asyncio.get_running_loop().run_in_executor(None, threading.Thread(target=drive).run)
    return {"sent": count}

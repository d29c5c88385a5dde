"""The labrt side of the side-by-side benchmark (bench/run.py): the same small lab as
wl_lab.py, written with labrt's API, so that both answer the same URLs with the same JSON.

Every stamp is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine, so the
bench's client process can subtract it from its own readings.
"""

import asyncio
import time

from labrt import Lab, requires_active, user

lab = Lab()


@lab.on_start
async def start(client_data, server_data):
    return {"views": 0}


@lab.route("GET", "/bench/active")
@requires_active
async def active(request):
    """The @requires_active JSON view every lab has in some form: who am I, how long left."""
    return {"username": user.username, "time_left": user.time_left}


@lab.task
def empty_task():
    """A plain-def task, run by the task threads as weblablib's runner threads run theirs."""
    return time.monotonic()


@lab.route("POST", "/bench/tasks")
@requires_active
async def submit(request):
    task = await empty_task.delay()
    return {"task_id": task.task_id}


@lab.route("GET", "/bench/tasks/{task_id}")
@requires_active
async def task_status(request):
    task = lab.get_task(request.match_info["task_id"])
    if task is None:
        return {"status": "missing"}
    return {"status": str(task.status), "result": task.result}


@lab.route("POST", "/bench/push")
@requires_active
async def push(request):
    """Push ``count`` stamped messages to the active user's page, ``gap`` seconds apart."""
    count = int(request.query["count"])
    gap = float(request.query["gap"])
    for i in range(count):
        await lab.push("stamp", {"i": i, "sent": time.monotonic()})
        await asyncio.sleep(gap)
    return {"sent": count}

"""The lab bench/chaos.py and bench/soak.py drive: every hook call, task run and device reset
leaves a line in a JSON-lines file outside the store ($LABRT_TEST_RECORD), written and fsynced
before the call goes on, so a crash loop can count them after a ``kill -9``.

Each line has the process id, so a checker can tell which run of ``labrt run`` did what. The
hooks take a while when the client data asks (``start_ms``, ``dispose_ms``), so that kills land
inside them too. The device (``[drivers.led]``, kind ``kinds:Recorded``) records its own
``safe()`` calls.
"""

import asyncio
import json
import os
import time

from labrt import Lab, current_task, requires_active, user

lab = Lab()


def record(event: str, **fields) -> None:
    path = os.environ.get("LABRT_TEST_RECORD")
    if path:
        line = json.dumps({"event": event, "pid": os.getpid(), **fields})
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def _option(name: str) -> float:
    data = user.request_client_data
    return float(data.get(name, 0)) if isinstance(data, dict) else 0.0


@lab.on_start
async def start(client_data, server_data):
    record("start", sid=user.session_id)
    await asyncio.sleep(_option("start_ms") / 1000)
    record("start-end", sid=user.session_id)
    return {"pings": 0}


@lab.on_dispose
async def dispose():
    sid = user.session_id
    record("dispose", sid=sid)
    await asyncio.sleep(_option("dispose_ms") / 1000)
    record("dispose-end", sid=sid)


@lab.route("POST", "/led/on")
@requires_active
async def led_on(request):
    lab.hardware["led"].on()
    state = lab.hardware["led"].state()
    await lab.push("led", state)
    return state


@lab.on_message("ping")
async def ping(data):
    user.data["pings"] += 1
    await lab.push("pong", data)


@lab.task()
def work(seconds):
    """A thread task that takes a while and stops when asked (as a good task does)."""
    record("task-start", task=current_task.task_id, sid=user.session_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not current_task.stopping:
        time.sleep(0.01)
    record("task-end", task=current_task.task_id, sid=user.session_id)
    return seconds


@lab.route("POST", "/work")
@requires_active
async def start_work(request):
    task = await work.delay(float(request.query.get("seconds", "1")))
    return {"task_id": task.task_id}

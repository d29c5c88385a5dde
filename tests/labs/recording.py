"""A lab for tests: records every hook call, with its session, in a JSON-lines file.

The file is named by the LABRT_TEST_RECORD environment variable (spawned servers) so that a
test can read what happened even after the process was killed. ``fail_start`` and
``fail_dispose`` in the client data make the hooks raise; ``hang_start`` and ``hang_dispose``
make them block (for killing or stopping the process in the middle of one).
"""

import json
import os
import time

from labrt import Lab, current_task, requires_active, requires_login, user

lab = Lab()


def record(event: str, **fields) -> None:
    path = os.environ.get("LABRT_TEST_RECORD")
    if path:
        line = json.dumps({"event": event, "sid": user.session_id, **fields})
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


@lab.on_start
def start(client_data, server_data):
    record("start")
    if isinstance(client_data, dict) and client_data.get("fail_start"):
        raise RuntimeError("the board does not answer")
    if isinstance(client_data, dict) and client_data.get("hang_start"):
        time.sleep(3600)
    return {"visits": 0}


@lab.on_dispose
def dispose():
    record("dispose")
    client_data = user.request_client_data
    if isinstance(client_data, dict) and client_data.get("fail_dispose"):
        raise RuntimeError("the board is on fire")
    if isinstance(client_data, dict) and client_data.get("hang_dispose"):
        time.sleep(3600)


@lab.route("GET", "/api/whoami")
@requires_login
async def whoami(request):
    return {"username": user.username, "active": user.active, "time_left": user.time_left}


@lab.route("POST", "/api/visit")
@requires_active
async def visit(request):
    user.data["visits"] += 1
    return {"visits": user.data["visits"]}


@lab.task()
def block(seconds):
    """A thread task that takes its time and ignores nothing: it stops when asked."""
    record("task-start")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not current_task.stopping:
        time.sleep(0.01)
    return "slept"


@lab.route("POST", "/api/block")
@requires_active
async def start_block(request):
    task = await block.delay(float(request.query.get("seconds", "3600")))
    return {"task_id": task.task_id}

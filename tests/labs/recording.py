"""A lab for tests: records every hook call, with its session, in a JSON-lines file.

The file is named by the LABRT_TEST_RECORD environment variable (spawned servers) so that a
test can read what happened even after the process was killed. ``fail_start`` and
``fail_dispose`` in the client data make the hooks raise.
"""

import json
import os

from labrt import Lab, requires_active, requires_login, user

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
    return {"visits": 0}


@lab.on_dispose
def dispose():
    record("dispose")
    if isinstance(user.request_client_data, dict) and user.request_client_data.get("fail_dispose"):
        raise RuntimeError("the board is on fire")


@lab.route("GET", "/api/whoami")
@requires_login
async def whoami(request):
    return {"username": user.username, "active": user.active, "time_left": user.time_left}


@lab.route("POST", "/api/visit")
@requires_active
async def visit(request):
    user.data["visits"] += 1
    return {"visits": user.data["visits"]}

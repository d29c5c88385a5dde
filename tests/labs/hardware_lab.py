"""A lab with hardware, for tests: routes drive the devices; on_dispose records what it saw."""

import json
import os

from labrt import Lab, requires_active

lab = Lab()


@lab.on_dispose
def dispose():
    path = os.environ.get("LABRT_TEST_RECORD")
    if path:
        led = lab.hardware["led"].state()["value"]
        with open(path, "a") as f:
            f.write(json.dumps({"event": "dispose", "led": led}) + "\n")


@lab.route("POST", "/led/{how}")
@requires_active
async def led(request):
    getattr(lab.hardware.led, request.match_info["how"])()
    return lab.hardware.led.state()


@lab.route("POST", "/dim/{value}")
@requires_active
async def dim(request):
    lab.hardware["dim"].value = float(request.match_info["value"])
    return lab.hardware["dim"].state()


@lab.route("POST", "/board")
@requires_active
async def board(request):
    body = await request.json()
    answer = await lab.hardware["board"].request(body["command"], timeout=5)
    return {"answer": answer}

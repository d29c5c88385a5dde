"""A lab with one light, for tests of labrt.testing: a route and a message switch it, and
on_dispose writes what it saw to the file the client data names (the test reads it)."""

import json

from aiohttp import web

from labrt import Lab, requires_active, user

lab = Lab()


@lab.on_start
async def start(client_data, server_data):
    return {"record": client_data.get("record"), "username": user.username}


@lab.on_dispose
def dispose():  # a plain def: labrt runs it in a thread, where a file may block
    record = user.data.get("record") if user.data else None
    if record:
        with open(record, "a") as f:
            seen = {"light": lab.hardware.light.is_active, "username": user.data["username"]}
            f.write(json.dumps(seen) + "\n")


@lab.route("GET", "/api/light")
@requires_active
async def light(request):
    return {"on": lab.hardware.light.is_active}


@lab.route("POST", "/api/light")
@requires_active
async def switch(request):
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
        return web.json_response({"error": True, "message": 'expected {"on": bool}'}, status=400)
    if body["on"]:
        lab.hardware.light.on()
    else:
        lab.hardware.light.off()
    await lab.push("light", lab.hardware.light.is_active)
    return {"on": lab.hardware.light.is_active}


@lab.on_message("toggle")
async def toggle(data):
    lab.hardware.light.toggle()
    await lab.push("light", lab.hardware.light.is_active)

"""A minimal lab: one switchable light, kept in the session's data.

It runs on any laptop; the hardware issues replace the light with a real GPIO output.
"""

import logging

from labrt import Lab, requires_active, user

lab = Lab()
log = logging.getLogger("lab.minimal")


@lab.on_start
async def start(client_data, server_data):
    log.info("welcome %s (%.0f s)", user.username, user.time_left)
    return {"light": False}


@lab.on_dispose
async def dispose():
    log.info("goodbye %s: the light goes off", user.username)


@lab.route("GET", "/api/light")
@requires_active
async def light(request):
    return {"light": user.data["light"], "time_left": user.time_left}


@lab.route("POST", "/api/light")
@requires_active
async def switch(request):
    user.data["light"] = not user.data["light"]
    return {"light": user.data["light"]}

"""A minimal lab: one light a student switches on and off.

The light is a GPIO output declared in lab.toml; on a laptop it is one of gpiozero's mock
pins, on a Raspberry Pi a real LED on GPIO17 (wired so that a floating pin means off).
"""

import logging

from labrt import Lab, requires_active, user

lab = Lab()
log = logging.getLogger("lab.minimal")


@lab.on_start
async def start(client_data, server_data):
    log.info("welcome %s (%.0f s)", user.username, user.time_left)


@lab.on_dispose
async def dispose():
    # labrt puts the light in its safe state ("off") right after this.
    log.info("goodbye %s", user.username)


@lab.route("GET", "/api/light")
@requires_active
async def light(request):
    return {"light": lab.hardware.light.is_active, "time_left": user.time_left}


@lab.route("POST", "/api/light")
@requires_active
async def switch(request):
    lab.hardware.light.toggle()
    return {"light": lab.hardware.light.is_active}

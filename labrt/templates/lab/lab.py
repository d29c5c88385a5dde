"""The {name} lab: one light the student switches from the page.

Start here: declare your devices in lab.toml, use them through ``lab.hardware``, and tell the
page what changed with ``lab.push``. docs/tutorial.md builds a complete lab from this one.
"""

from drivers import Output
from labrt import Devices, Lab, requires_active, user


class Hardware(Devices):
    """The devices of lab.toml, each with its class: an editor then completes
    ``lab.hardware.light.``, and the lab refuses to start if lab.toml disagrees."""

    light: Output


lab = Lab(Hardware)


@lab.on_start
async def start(client_data, server_data):
    """A student was admitted: the lab is theirs until their slot ends."""


@lab.on_dispose
async def dispose():
    """The slot is over. labrt puts every device in its safe state right after this."""


@lab.on_message("toggle")
async def toggle(data):
    lab.hardware.light.toggle()
    await lab.push("light", lab.hardware.light.is_active)


@lab.route("GET", "/api/state")
@requires_active
async def state(request):
    return {"light": lab.hardware.light.is_active, "name": user.full_name or user.username}

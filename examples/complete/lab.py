"""The complete example: ten lights, a button, a microcontroller and a camera, on the
student's page.

One piece of each thing a lab usually needs:

- devices declared in lab.toml (``lab.example.toml`` at the root of the repository), reached
  as ``lab.hardware``: ten ``gpio.output`` lights, a ``gpio.input`` button and a board on a
  serial line;
- a message from the page (``labrt.send("light", {"n": 3})``) that switches a light, answered
  by pushing the new state to the student's pages (``lab.push``);
- a callback on the bench's button, set in ``on_start`` and removed in ``on_dispose``, that
  pushes every press and release to the page;
- a long job, programming the board, as a task that one student at a time may run; its
  progress reaches the page by itself, as labrt's ``task`` events;
- routes for the page's first look at the lab and for starting the job;
- a camera on the bench (``cam``), with no code here at all: labrt serves its pictures to
  the student alone, and the page shows them with ``labrt.camera``.

On a laptop the lights and the button are gpiozero's mock pins and the board is the
simulator of ``simulated_board.py``; on a Raspberry Pi the same module drives real ones. labrt
puts every device in its safe state (lights off, the board sent ``RESET``) after each student:
nothing here has to.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from drivers import Edge
from labrt import Lab, current_task, requires_active, requires_login, user

lab = Lab()
log = logging.getLogger("lab.complete")

LIGHTS = 10  # light0 ... light9 in lab.toml
SKETCH_SIZE = 4096  # bytes: the size sent to the board when the page does not give one
MAX_SKETCH_SIZE = 32256  # an Arduino Uno's flash, without its bootloader
LINE_WAIT = 1.0  # seconds: the task looks at current_task.stopping at least this often
BOARD_SILENCE = 10.0  # seconds without a line from the board before the job gives up


def lights() -> list[bool]:
    return [lab.hardware[f"light{n}"].is_active for n in range(LIGHTS)]


def button_changed(edge: Edge) -> None:
    """A plain def: labrt runs it in a thread, outside any session. There ``lab.push`` is
    called without ``await``, and reaches the pages of every student connected (one: lab.toml
    admits one student at a time)."""
    lab.push("button", {"pressed": edge.active})


@lab.on_start
async def start(client_data, server_data):
    # lab.hardware does not exist while this module is imported: set callbacks here.
    lab.hardware.button.when_activated = button_changed
    lab.hardware.button.when_deactivated = button_changed
    log.info("welcome %s (%.0f s)", user.username, user.time_left)


@lab.on_dispose
async def dispose():
    # The student's task has stopped by now, and labrt makes the devices safe right after.
    # A callback stays set across sessions until it is removed.
    lab.hardware.button.when_activated = None
    lab.hardware.button.when_deactivated = None
    log.info("goodbye %s", user.username)


@lab.on_message("light")
async def switch_light(data):
    """``{"n": 0..9}`` from the page: switch that light, and tell the student's pages (every
    tab) the new state. The data comes from the browser: a mistake is answered with an
    ``error`` event, as labrt answers a bad message, never with an exception."""
    n = data.get("n") if isinstance(data, dict) else None
    if type(n) is not int or not 0 <= n < LIGHTS:  # type(): True is an int to Python
        message = f'expected {{"n": 0 to {LIGHTS - 1}}}, got {json.dumps(data)[:100]}'
        await lab.push("error", {"code": "bad-light", "message": message})
        return
    lab.hardware[f"light{n}"].toggle()
    await lab.push("lights", lights())


@lab.task(unique="global")  # one board: one programming job at a time, whoever asks
async def program_board(size: int) -> str:
    """Send ``PROGRAM <size>`` and follow the board's answer to ``DONE``, saving the progress
    (0-100) at each ``PROGRESS`` line. An ``async def`` task, because the serial port's
    reads are coroutines: it waits without holding a thread."""
    board = lab.hardware.board
    current_task.data = {"progress": 0}
    current_task.store()
    lines = board.lines()  # every line from now on: subscribe before sending
    await board.write_line(f"PROGRAM {size}")
    silent = 0.0
    while not current_task.stopping:  # the slot is over: stop early
        try:
            async with asyncio.timeout(LINE_WAIT):
                line = await anext(lines, None)
        except TimeoutError:
            silent += LINE_WAIT
            if silent >= BOARD_SILENCE:
                raise TimeoutError(f"the board said nothing for {BOARD_SILENCE:g} s") from None
            continue
        silent = 0.0
        if line is None:
            raise RuntimeError("the board was closed: the lab is stopping")
        word, _, rest = line.partition(" ")
        if word == "PROGRESS":
            current_task.data = {"progress": int(rest)}
            current_task.store()  # each store() reaches the page as a "task" event
        elif word == "DONE":
            current_task.data = {"progress": 100}  # saved as the task ends
            return "done"
        elif word == "ERR":
            raise RuntimeError(f"the board refused: {rest}")
    return "stopped"  # a normal end, not a failure; labrt then sends the board RESET


@lab.route("GET", "/api/state")
@requires_login  # an expired student too: the page then shows that the time is over
async def state(request):
    """Everything the page shows, for its first look and after a reconnection (pushes sent
    while a page is disconnected are lost)."""
    running = [task for task in lab.running_tasks if task.name == "program_board"]
    return {
        "lights": lights(),
        "button": lab.hardware.button.is_active,
        "locale": user.locale,
        "name": user.full_name or user.username,
        "back": user.back,
        "task": running[0].task_id if running else None,
    }


@lab.route("POST", "/api/program")
@requires_active
async def program(request):
    """Start programming the board; the answer is the task, and its progress follows as
    ``task`` events. The body may give ``{"size": bytes}``."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        body = None
    size = body.get("size", SKETCH_SIZE) if isinstance(body, dict) else None
    if type(size) is not int or not 1 <= size <= MAX_SKETCH_SIZE:
        message = f'expected {{"size": 1 to {MAX_SKETCH_SIZE}}} or no body'
        return web.json_response({"error": True, "message": message}, status=400)
    task = await program_board.delay(size)
    if task.failed and task.error["code"] == "already-running":
        # A unique task is refused at once, never queued: it comes back already failed.
        message = "The board is busy with another job."
        return web.json_response({"error": True, "message": message}, status=409)
    return task.as_dict()

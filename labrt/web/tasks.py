"""``/labrt/tasks/{id}``: a page follows its own session's tasks, and nobody else's."""

from __future__ import annotations

from aiohttp import web

from .cookies import session_of
from .keys import TASKS
from .responses import json_error


async def task_state(request: web.Request) -> web.Response:
    session = await session_of(request)
    if session is None:
        return json_error(401, "No session: open the laboratory from the link of your booking.")
    task = request.app[TASKS].get(request.match_info["task_id"])
    if task is None:
        return json_error(404, "No such task (finished tasks are kept for a limited time).")
    if task.session_id != session.sid:
        return json_error(403, "This task belongs to another session.")
    return web.json_response(task.as_dict())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/labrt/tasks/{task_id}", task_state)

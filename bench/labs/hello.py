"""The ceiling: a bare aiohttp server answering one small JSON document, in one process, on
the same machine and the same default event loop as labrt (``python hello.py PORT``)."""

import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"should_finish": 5})


app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)

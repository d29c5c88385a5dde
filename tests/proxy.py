"""A reverse proxy that serves a lab under a path prefix, as nginx's
``location /lamp/ { proxy_pass http://127.0.0.1:8080/; }`` does: the prefix is stripped on the
way in, the ``Host`` header is passed on, WebSockets are tunnelled, and nothing is rewritten on
the way out (so a link without the prefix would lead nowhere, as it would behind nginx)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
}


class PrefixProxy:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.upstream = ""  # set once the lab listens: the proxy's port goes in its config
        self.port = 0
        self._client: aiohttp.ClientSession | None = None

    async def _pipe(self, source, sink) -> None:
        async for message in source:
            if message.type is aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
        await sink.close(code=source.close_code or 1000)

    async def _websocket(self, request: web.Request, target: str) -> web.StreamResponse:
        """Tunnel a WebSocket, passing its subprotocols both ways as nginx does: labrt.js
        offers ``labrt`` and its token there, and a browser fails a connection whose answer
        selects none of those it offered."""
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("cookie", "origin")}
        offered = request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        protocols = [name.strip() for name in offered if name.strip()]
        upstream = target.replace("http", "ws", 1)
        async with self._client.ws_connect(upstream, headers=headers, protocols=protocols) as up:
            down = web.WebSocketResponse(protocols=(up.protocol,) if up.protocol else ())
            await down.prepare(request)
            await asyncio.gather(self._pipe(up, down), self._pipe(down, up))
            return down

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        if not request.path.startswith(self.prefix + "/"):
            return web.Response(status=404, text="not behind the proxy")
        target = self.upstream + request.path_qs[len(self.prefix) :]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(
            request.method,
            target,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=body, headers=out)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PrefixProxy]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._client = aiohttp.ClientSession(auto_decompress=False)
        try:
            yield self
        finally:
            await self._client.close()
            await runner.cleanup()

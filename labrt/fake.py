"""A stand-in RLMS: talks to a running lab over HTTP exactly as WebLab-Deusto or
LabDiscoveryEngine would, so a lab can be tried without either (``labrt fake``)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import Config
from .model import Dialect, StartRequest
from .protocol import start_body


def basic_auth(username: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header an RLMS sends."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class FakeError(Exception):
    """The lab could not be reached or did not answer in the protocol's terms."""


def lab_url(config: Config) -> str:
    """Where the lab of ``config`` listens, as seen from this machine."""
    host = config.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}{config.server.base_url}"


@dataclass(frozen=True)
class FakeRlms:
    url: str  # the lab's root URL, as an RLMS is configured with it
    username: str
    password: str
    dialect: Dialect

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        target = f"{self.url}/{self.dialect.value}/sessions/{path}"
        timeout = aiohttp.ClientTimeout(total=300)
        try:
            async with (
                aiohttp.ClientSession(
                    headers=basic_auth(self.username, self.password), timeout=timeout
                ) as http,
                http.request(method, target, json=body) as response,
            ):
                try:
                    return await response.json(content_type=None)
                except ValueError:
                    text = (await response.text())[:200]
                    raise FakeError(
                        f"{method} {target}: HTTP {response.status}, not JSON: {text!r}"
                    ) from None
        except aiohttp.ClientError as exc:
            raise FakeError(f"cannot reach the lab at {target}: {exc}") from None

    async def start(self, request: StartRequest) -> dict[str, Any]:
        answer = await self._call("POST", "", start_body(self.dialect, request))
        if not isinstance(answer, dict) or "session_id" not in answer or "url" not in answer:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise FakeError(f"the lab did not start the session: {message}")
        return answer

    async def status(self, sid: str) -> int:
        answer = await self._call("GET", f"{sid}/status")
        if not isinstance(answer, dict) or not isinstance(answer.get("should_finish"), int):
            raise FakeError(f"unexpected status answer: {answer}")
        return answer["should_finish"]

    async def dispose(self, sid: str) -> str:
        if self.dialect is Dialect.NEW:
            answer = await self._call("DELETE", sid)
        else:
            answer = await self._call("POST", sid, {"action": "delete"})
        if not isinstance(answer, dict) or "message" not in answer:
            raise FakeError(f"unexpected dispose answer: {answer}")
        return str(answer["message"])

"""A stand-in RLMS: talks to a running lab over HTTP exactly as WebLab-Deusto or
LabDiscoveryEngine would, so a lab can be tried without either (``labrt fake``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .client import LabCallError, call, lab_address
from .config import Config
from .model import Dialect, StartRequest
from .protocol import start_body


class FakeError(LabCallError):
    """The lab could not be reached or did not answer in the protocol's terms."""


def lab_url(config: Config) -> str:
    """The lab's root URL, as an RLMS is configured with it."""
    return f"{lab_address(config)}{config.server.base_url}"


@dataclass(frozen=True)
class FakeRlms:
    url: str  # the lab's root URL, as an RLMS is configured with it
    username: str
    password: str
    dialect: Dialect

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        target = f"{self.url}/{self.dialect.value}/sessions/{path}"
        try:
            _, answer = await call(
                method, target, username=self.username, password=self.password, body=body
            )
        except LabCallError as exc:
            raise FakeError(str(exc)) from None
        return answer

    async def start(self, request: StartRequest) -> dict[str, Any]:
        answer = await self._call("POST", "", start_body(self.dialect, request))
        if not isinstance(answer, dict) or "session_id" not in answer or "url" not in answer:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise FakeError(f"the lab did not start the session: {message}")
        return answer

    async def status(self, sid: str) -> int:
        answer = await self._call("GET", f"{sid}/status")
        should_finish = answer.get("should_finish") if isinstance(answer, dict) else None
        if not isinstance(should_finish, int):
            raise FakeError(f"unexpected status answer: {answer}")
        return should_finish

    async def dispose(self, sid: str) -> str:
        if self.dialect is Dialect.NEW:
            answer = await self._call("DELETE", sid)
        else:
            answer = await self._call("POST", sid, {"action": "delete"})
        if not isinstance(answer, dict) or "message" not in answer:
            raise FakeError(f"unexpected dispose answer: {answer}")
        return str(answer["message"])

"""Calling a running lab over HTTP from the command line, as its RLMS (``labrt fake``) or as
its operator (``labrt hardware``), with the RLMS's credentials."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from .config import Config


class LabCallError(Exception):
    """The lab could not be reached, or did not answer with JSON."""


def basic_auth(username: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header an RLMS sends."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def lab_address(config: Config) -> str:
    """``http://host:port`` where the lab of ``config`` listens, as seen from this machine."""
    host = config.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


async def call(
    method: str, url: str, *, username: str, password: str, body: Any = None
) -> tuple[int, Any]:
    """One request; returns the status and the JSON answer."""
    timeout = aiohttp.ClientTimeout(total=300)  # as LDE: a dispose may take a while
    try:
        async with (
            aiohttp.ClientSession(headers=basic_auth(username, password), timeout=timeout) as http,
            http.request(method, url, json=body) as response,
        ):
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                text = (await response.text())[:200]
                raise LabCallError(
                    f"{method} {url}: HTTP {response.status}, not JSON: {text!r}"
                ) from None
    except aiohttp.ClientError as exc:
        raise LabCallError(f"cannot reach the lab at {url}: {exc}") from None

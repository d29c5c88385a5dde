"""A pretend microcontroller on a TCP port, for tests and for trying a lab without a board.

It talks like a typical Arduino sketch: a banner once booted, one line per command, answers
ending in CRLF as ``Serial.println`` sends them. The serial driver reaches it at
``socket://127.0.0.1:PORT``. Stopping it drops every connection, as unplugging a board would;
starting it again listens on the same port, as plugging it back would.

    python -m drivers.simulator --port 7000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

BANNER = "READY"


class DeviceSimulator:
    """Commands: ``PING`` → ``PONG``; ``ECHO <text>`` → ``<text>``; ``LED <n> ON|OFF`` →
    ``OK``; ``PROGRAM <size>`` → ``PROGRESS 25``, ``PROGRESS 50``, ``PROGRESS 75``, ``DONE``
    one ``step`` apart; ``RESET`` → ``OK RESET``; anything else → ``ERR unknown command``.
    Every command received is kept in ``commands``, in order."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        banner: str = BANNER,
        boot_time: float = 0.05,
        step: float = 0.02,
    ) -> None:
        self.host = host
        self.port = port
        self.banner = banner
        # A board boots after the port opens; the banner comes only then, and the driver must
        # not miss it (pyserial drops what arrived before open() returned).
        self.boot_time = boot_time
        self.step = step
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (again, on the same port once one was picked)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            client.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> DeviceSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await asyncio.sleep(self.boot_time)
            await self._send(writer, self.banner)
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").strip()
                if command:
                    self.commands.append(command)
                    async for answer in self._answers(command):
                        await self._send(writer, answer)
        except ConnectionError:
            pass  # the driver hung up
        except asyncio.CancelledError:
            # stop() is dropping the connection. End normally: asyncio's stream callback of
            # Python 3.11 reports a cancelled connection task as an error.
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answers(self, command: str) -> AsyncIterator[str]:
        word, _, rest = command.partition(" ")
        word = word.upper()
        if word == "PING" and not rest:
            yield "PONG"
        elif word == "ECHO":
            yield rest
        elif word == "LED":
            number, _, level = rest.partition(" ")
            ok = number.isdigit() and level.upper() in ("ON", "OFF")
            yield "OK" if ok else "ERR usage: LED <n> ON|OFF"
        elif word == "PROGRAM" and rest.isdigit():
            for percent in (25, 50, 75):
                await asyncio.sleep(self.step)
                yield f"PROGRESS {percent}"
            await asyncio.sleep(self.step)
            yield "DONE"
        elif word == "RESET" and not rest:
            yield "OK RESET"
        else:
            yield "ERR unknown command"

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()


async def _main(host: str, port: int) -> None:
    async with DeviceSimulator(port, host=host) as device:
        print(f"simulated device at {device.url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(arguments.host, arguments.port))

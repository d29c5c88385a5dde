"""The ``labrt`` command: run a lab, check its config, play the RLMS, list sessions.

Every configuration mistake ends the command with one line on stderr and exit status 2,
before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import Callable, Coroutine, Iterator, Mapping
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from drivers import DriverError

from . import __version__, logs
from .client import LabCallError, call, lab_address
from .config import CREDENTIAL, PASSWORD_ENV, Config, ConfigError, load_config
from .fake import FakeError, FakeRlms, lab_url
from .logs import session_tag
from .model import Dialect, StartRequest
from .store import Store, StoreError

CONFIG_ERROR = 2
STOPPING_THREADS_GRACE = 2.0
FAKE_SESSION_FILE = ".labrt-fake-session"

T = TypeVar("T")
# No dir_okay=False: click would answer a directory with a four-line usage error; load_config
# reports it as one line and exit status 2, like every other configuration mistake.
CONFIG = click.argument("config_file", metavar="LAB_TOML", type=click.Path(path_type=Path))


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"labrt: {message}", err=True)
    sys.exit(status)


def _load(path: Path, *, dev: bool) -> Config:
    try:
        return load_config(path, dev=dev)
    except ConfigError as exc:
        _fail(str(exc), CONFIG_ERROR)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labrt")
def main() -> None:
    """labrt puts a physical laboratory on the web.

    Start with `labrt run lab.example.toml --dev`, then `labrt fake new lab.example.toml`.
    """


@main.command()
@CONFIG
@click.option("--host", help="Address to listen on (default: [server] host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: [server] port).")
@click.option(
    "--dev",
    is_flag=True,
    help="Development machine: allow the example passwords and serve /labrt/dev "
    "(start sessions, press mock buttons). Loopback addresses only.",
)
@click.option(
    "--force-dev",
    is_flag=True,
    help="Allow --dev on an address other machines can reach (never on a real lab).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for a log collector.",
)
def run(
    config_file: Path,
    host: str | None,
    port: int | None,
    dev: bool,
    force_dev: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the lab described by LAB_TOML until SIGTERM or Ctrl-C."""
    from ._engine.activation import ActivationError, inherited_sockets, port_of
    from .loader import load_lab
    from .runtime import Runtime, serve

    logs.setup(log_level.upper(), log_format)
    try:
        sockets = inherited_sockets()  # first: nothing started from here inherits them
    except ActivationError as exc:
        _fail(str(exc), CONFIG_ERROR)
    config = _load(config_file, dev=dev)
    host = host or config.server.host
    if dev and not force_dev and not _loopback(host):
        _fail(
            f"--dev lets anyone who reaches {host} start sessions and press buttons: use it on "
            "127.0.0.1 (--host 127.0.0.1), or add --force-dev if you really mean it",
            CONFIG_ERROR,
        )
    try:
        lab = load_lab(config)
    except ConfigError as exc:
        _fail(str(exc), CONFIG_ERROR)
    runtime = Runtime(config, lab)
    port = config.server.port if port is None else port
    for sock in sockets:
        if port and port_of(sock) != port:
            _fail(
                f"systemd passed a socket on port {port_of(sock)}, but [server] port (or --port) "
                f"is {port}: make the socket unit's ListenStream= and [server] port the same",
                CONFIG_ERROR,
            )
    try:
        _run(serve(runtime, host, port, sockets))
    except (StoreError, DriverError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot listen: {exc.strerror or exc}")
    _exit_past_stuck_threads()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exit_past_stuck_threads() -> None:
    """Exit now if an author's blocking hook is still stuck in a thread.

    Python joins pool threads at exit, so one hook that never returns would keep a stopped
    service alive until systemd kills it. Everything that matters (dispose, safe state, the
    store) is already done and was reported when the hook timed out.
    """
    others = [
        t for t in threading.enumerate() if not t.daemon and t is not threading.current_thread()
    ]
    deadline = time.monotonic() + STOPPING_THREADS_GRACE  # pools just told to stop, finishing
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if stuck:
        click.echo(f"labrt: not waiting for stuck threads: {', '.join(stuck)}", err=True)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)


@main.command()
@CONFIG
@click.option("--dev", is_flag=True, help="Check as `labrt run --dev` would.")
def check(config_file: Path, dev: bool) -> None:
    """Check LAB_TOML and import the lab module, without starting anything."""
    from drivers.pins import gpio_chips

    from ._engine.hardware import warnings
    from .loader import load_lab

    config = _load(config_file, dev=dev)
    try:
        lab = load_lab(config)
    except ConfigError as exc:
        _fail(str(exc), CONFIG_ERROR)
    chips = gpio_chips()
    hooks = [name for name, fn in vars(lab.hooks).items() if fn is not None]
    click.echo(f"{config.file}: OK")
    click.echo(
        f"  lab:      {config.lab.name!r}, hooks: {', '.join(hooks) or 'none'}, "
        f"routes: {len(lab.routes)}, tasks: {', '.join(lab.task_functions) or 'none'}, "
        f"messages: {', '.join(lab.message_handlers) or 'none'}"
    )
    click.echo(
        f"  server:   http://{config.server.host}:{config.server.port}"
        f"{config.server.base_url}/{{weblab,ldl}}/sessions/"
    )
    click.echo(f"  store:    {config.store.path}")
    machine = f"GPIO chips {', '.join(chips)}" if chips else "no GPIO on this machine"
    click.echo(f"  hardware: pins = {config.hardware.pins!r}; {machine}")
    for d in config.hardware.drivers:
        click.echo(f"    {d.name}: {d.kind} {_options(d.options)}".rstrip())
    for warning in warnings(config.hardware):  # warnings: the wiring may be meant so
        click.echo(f"labrt: warning: {warning}", err=True)


# -- fake -------------------------------------------------------------------------------------


def _fake_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    @CONFIG
    @click.option(
        "--dialect",
        type=click.Choice([d.value for d in Dialect]),
        default=Dialect.NEW.value,
        show_default=True,
        help="ldl: LabDiscoveryEngine; weblab: WebLab-Deusto.",
    )
    @click.option("--url", help="The lab's root URL (default: from LAB_TOML's [server]).")
    @wraps(fn)
    def wrapped(config_file: Path, dialect: str, url: str | None, **kwargs: Any) -> Any:
        # The fake RLMS is a client: the known-password rule protects servers, not it.
        config = _load(config_file, dev=True)
        rlms = FakeRlms(
            url=(url or lab_url(config)).rstrip("/"),
            username=config.rlms.username,
            password=config.rlms.password,
            dialect=Dialect(dialect),
        )
        try:
            return fn(rlms, **kwargs)
        except FakeError as exc:
            _fail(str(exc))

    return wrapped


def _saved_session() -> str:
    try:
        return Path(FAKE_SESSION_FILE).read_text().strip()
    except FileNotFoundError:
        _fail(f"no {FAKE_SESSION_FILE} here: start a session with `labrt fake new` first")


if TYPE_CHECKING:
    # click.ParamType is generic only from click 8.4 on; labrt still runs on 8.1, where
    # subscripting it at run time would fail.
    _JsonParamType = click.ParamType[dict[str, Any]]
else:
    _JsonParamType = click.ParamType


class _JsonObject(_JsonParamType):
    name = "JSON"

    def convert(self, value: Any, param: Any, ctx: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"not JSON: {exc}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail('expected a JSON object, like {"mode": "advanced"}', param, ctx)
        return parsed


@main.group()
def fake() -> None:
    """Play the RLMS: start, poll and end sessions of a running lab over HTTP."""


@fake.command("new")
@_fake_options
@click.option("--username", default="john.smith", show_default=True)
@click.option(
    "--username-unique",
    default=None,
    show_default="USERNAME@institution",
    help="The student's unique name: two usernames are two students unless it is given.",
)
@click.option("--name", "full_name", default="John Smith", show_default=True)
@click.option("--locale", default="en", show_default=True)
@click.option("--assigned-time", type=click.FloatRange(min=1), default=300.0, show_default=True)
@click.option("--back", default="http://localhost/", show_default=True)
@click.option("--experiment-name", default="mylab", show_default=True)
@click.option("--category-name", default="Lab Experiments", show_default=True, help='"" for none.')
@click.option(
    "--client-data",
    type=_JsonObject(),
    default="{}",
    show_default=True,
    help="JSON object given to on_start as client_data.",
)
@click.option("--open/--no-open", "open_browser", default=False, help="Open the URL in a browser.")
def fake_new(
    rlms: FakeRlms,
    assigned_time: float,
    open_browser: bool,
    client_data: dict[str, Any],
    category_name: str,
    **fields: Any,
) -> None:
    """Start a session as the RLMS would; print the student's URL."""
    now = time.time()
    name = fields["experiment_name"]
    if fields["username_unique"] is None:
        fields["username_unique"] = f"{fields['username']}@institution"
    request = StartRequest(
        dialect=rlms.dialect,
        category_name=category_name or None,
        experiment_id=f"{name}@{category_name}" if category_name else name,
        client_data=client_data,
        server_data={},
        start_date=now,
        max_date=now + assigned_time,
        **fields,
    )
    answer = _run(rlms.start(request))
    Path(FAKE_SESSION_FILE).write_text(answer["session_id"] + "\n")
    click.echo(f"session: {answer['session_id']}")
    click.echo(f"open:    {answer['url']}")
    if open_browser:
        webbrowser.open(answer["url"])


@fake.command("status")
@_fake_options
def fake_status(rlms: FakeRlms) -> None:
    """Ask the lab whether the last fake session should finish."""
    click.echo(f"should_finish: {_run(rlms.status(_saved_session()))}")


@fake.command("dispose")
@_fake_options
def fake_dispose(rlms: FakeRlms) -> None:
    """End the last fake session, as the RLMS does when the slot is over."""
    message = _run(rlms.dispose(_saved_session()))
    Path(FAKE_SESSION_FILE).unlink(missing_ok=True)
    click.echo(message)


# -- systemd --------------------------------------------------------------------------------

UNIT = Path(__file__).resolve().parent / "templates" / "labrt.service"
SOCKET_UNIT = UNIT.with_suffix(".socket")
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


@contextlib.contextmanager
def _as_the_service_sees_it() -> Iterator[Path]:
    """The environment systemd gives the unit: its state directory, and a credential in place
    of the password (the real one is not needed to write the unit, and may be root's alone).

    The state directory is a stand-in, yielded: systemd creates the real one when the service
    first starts, so before that it does not exist, and the config check would refuse it.
    """
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as credentials, tempfile.TemporaryDirectory() as state:
        (Path(credentials) / CREDENTIAL).write_text("placeholder")
        os.environ["STATE_DIRECTORY"] = state
        os.environ["CREDENTIALS_DIRECTORY"] = credentials
        os.environ.pop(PASSWORD_ENV, None)  # the shell's, not the service's
        try:
            yield Path(state).resolve()
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _read_by_the_service(config: Config) -> list[Path]:
    paths = [config.file, config.lab.static, config.rlms.password_file]
    if config.lab.module.endswith(".py"):
        paths.append(config.file.parent / config.lab.module)
    return [Path(p).resolve() for p in paths if p is not None]


def _user_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A user name as useradd accepts it: it goes into the unit's lines as it is."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value):
        raise click.BadParameter(
            f"expected a system user name (lowercase letters, digits, '_' and '-'), got {value!r}"
        )
    return value


def _running_pex() -> Path | None:
    """The single file (``labrt-VERSION-linux-ARCH.pyz``) this labrt runs from, if it does:
    pex sets ``PEX`` to its path."""
    path = os.environ.get("PEX")
    return Path(path).resolve() if path and Path(path).is_file() else None


def _this_labrt(pex: Path | None) -> str:
    """The command that starts this installation of labrt: the single file, run by its own
    ``#!/usr/bin/python3`` (or by this python3 when it is not executable), or the venv's
    ``labrt`` script."""
    if pex is None:
        return str(Path(sys.executable).with_name("labrt"))
    if os.access(pex, os.X_OK):
        return str(pex)
    # Run from a pex, sys.executable is pex's venv's python; the base one is the system's.
    return f"{Path(sys.executable).resolve()} {pex}"


@main.command()
@CONFIG
@click.option(
    "--user",
    default="labrt",
    show_default=True,
    callback=_user_name,
    help="The service's own user.",
)
@click.option(
    "--socket",
    "socket_unit",
    is_flag=True,
    help="Print the matching socket unit instead, which holds the lab's port while it restarts.",
)
def systemd(config_file: Path, user: str, socket_unit: bool) -> None:
    """Print a systemd unit that runs LAB_TOML with this installation of labrt."""
    with _as_the_service_sees_it() as state_directory:
        config = _load(config_file, dev=True)
    if socket_unit:
        click.echo(_socket_unit(config))
        return
    pex = _running_pex()
    in_home = any(p.is_relative_to(home) for p in _read_by_the_service(config) for home in HOMES)
    lines = [f"# Written by `labrt systemd {config.file}`; see docs/deployment.md."]
    notes = True
    for line in UNIT.read_text().splitlines():
        if notes and line.startswith("#"):
            continue  # the shipped file's own installation notes
        notes = False
        if line.startswith("ExecStart="):
            line = f"ExecStart={_this_labrt(pex)} run {config.file}"
        elif line.startswith(("User=", "Group=")):
            line = line.split("=")[0] + f"={user}"
        elif line.startswith("LoadCredential=") and not config.rlms.source.startswith("systemd"):
            continue  # lab.toml says where the password is; a credential would go unread
        elif line == "ProtectHome=yes" and in_home:
            line = "ProtectHome=read-only"  # the lab's files are in a home directory
        lines.append(line)
        if line.startswith("StateDirectory="):
            store = config.store.path.parent
            if store != state_directory:
                lines.append(f"ReadWritePaths={store}")
            if pex is not None:  # pex unpacks the file into PEX_ROOT: not $HOME (ProtectHome=)
                directory = line.split("=", 1)[1]
                lines.append(f"CacheDirectory={directory}")
                lines.append(f"Environment=PEX_ROOT=%C/{directory}")
    click.echo("\n".join(lines))


def _socket_unit(config: Config) -> str:
    """The shipped labrt.socket, listening on [server] host and port."""
    host = "127.0.0.1" if config.server.host == "localhost" else config.server.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        _fail(
            f"[server] host = {host!r}: a socket unit listens on an IP address, not a name; "
            'set host to one ("127.0.0.1" behind a proxy, "0.0.0.0" for every address)',
            CONFIG_ERROR,
        )
    shown = f"[{address}]" if address.version == 6 else str(address)
    lines = [
        f"# Written by `labrt systemd --socket {config.file}`; see docs/deployment.md.",
        "# Install it under the service's name: labrt.socket beside labrt.service.",
    ]
    notes = True
    for line in SOCKET_UNIT.read_text().splitlines():
        if notes and line.startswith("#"):
            continue  # the shipped file's own installation notes
        notes = False
        if line.startswith("ListenStream="):
            line = f"ListenStream={shown}:{config.server.port}"
        lines.append(line)
    return "\n".join(lines)


# -- init -----------------------------------------------------------------------------------

TEMPLATE = Path(__file__).resolve().parent / "templates" / "lab"


@main.command()
@click.argument("name")
def init(name: str) -> None:
    """Write a new lab skeleton into the folder NAME; it runs at once with labrt run."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        _fail(f"{name!r}: expected a folder name of letters, digits, '-' and '_'", CONFIG_ERROR)
    target = Path(name)
    if target.exists():
        _fail(f"{target} already exists: choose another name", CONFIG_ERROR)
    for source in sorted(TEMPLATE.rglob("*")):
        # Only the template's own files: a plain `pip install` byte-compiles its .py files
        # into __pycache__ next to them, which are neither text nor part of a lab.
        relative = source.relative_to(TEMPLATE)
        if "__pycache__" in relative.parts or source.suffix in (".pyc", ".pyo"):
            continue
        if source.is_file():
            written = target / relative
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_text(source.read_text().replace("{name}", name))
    password = target / "rlms.password"
    password.write_text(secrets.token_urlsafe(24) + "\n")
    password.chmod(0o600)
    click.echo(f"wrote {target}/: lab.toml, lab.py, test_lab.py, static/index.html, rlms.password")
    click.echo(f"run it:  labrt run {target}/lab.toml --dev")
    click.echo("then open http://127.0.0.1:8080/labrt/dev and start a session")
    click.echo(f"test it: cd {target} && pytest   (pip install pytest pytest-asyncio)")


# -- hardware -------------------------------------------------------------------------------


def _options(options: Mapping[str, Any]) -> str:
    """A driver's options as lab.toml spells them (``safe="off" active_high=true``)."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in options.items() if v is not None)


def _assignment(value: str) -> tuple[str, Any]:
    name, equals, raw = value.partition("=")
    if not equals or not name:
        raise click.BadParameter(f"expected NAME=VALUE, like led1=on, not {value!r}")
    try:
        parsed = json.loads(raw)  # numbers, true/false; anything else is a string
    except ValueError:
        parsed = raw
    return name, parsed


@main.command()
@CONFIG
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a device of the running lab (bench testing; refused during a session).",
)
@click.option("--url", help="The lab's address (default: from LAB_TOML's [server]).")
def hardware(config_file: Path, assignments: tuple[str, ...], url: str | None) -> None:
    """Show the lab's devices and their state; set one with --set led1=on."""
    config = _load(config_file, dev=True)
    changes = [_assignment(a) for a in assignments]
    base = (url or lab_address(config)).rstrip("/")
    creds = {"username": config.rlms.username, "password": config.rlms.password}

    async def talk() -> Any:
        for name, value in changes:
            body = {"name": name, "value": value}
            status, answer = await call("POST", f"{base}/labrt/hardware", body=body, **creds)
            if status != 200:
                _fail(f"{name}: {answer.get('message', answer)}")
        return await call("GET", f"{base}/labrt/hardware", **creds)

    try:
        status, answer = _run(talk())
    except LabCallError as exc:
        rows: list[tuple[Any, ...]] = [("DEVICE", "KIND", "OPTIONS")]
        for d in config.hardware.drivers:
            rows.append((d.name, d.kind, _options(d.options)))
        _table(rows)
        _fail(f"the lab is not running ({exc}); start it to see states or --set", 1)
    if status != 200:
        _fail(str(answer.get("message", answer)))
    click.echo(f"pins: {answer['mode']}; {'available' if answer['available'] else 'UNAVAILABLE'}")
    rows = [("DEVICE", "KIND", "STATE", "PROBLEM")]
    for name, device in answer["devices"].items():
        # Lists (a serial device's recent lines) are for the dev page, not a table.
        state = " ".join(f"{k}={v}" for k, v in device["state"].items() if not isinstance(v, list))
        rows.append((name, device["kind"], state, device["problem"] or ""))
    _table(rows)


# -- the record: sessions and tasks --------------------------------------------------------


def _read_store(config_file: Path, read: Callable[[Store], Coroutine[Any, Any, T]]) -> T | None:
    """Run ``read`` on the lab's store, opened read-only (the lab may be running)."""
    config = _load(config_file, dev=True)
    if not config.store.path.exists():
        click.echo(f"no store yet at {config.store.path}: the lab has never run")
        return None

    async def run() -> T:
        store = await Store.open(config.store.path, read_only=True)
        try:
            return await read(store)
        finally:
            await store.close()

    try:
        return _run(run())
    except StoreError as exc:
        _fail(str(exc))


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


LIMIT = click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)


@main.command()
@CONFIG
@LIMIT
def sessions(config_file: Path, limit: int) -> None:
    """List the most recent sessions in the lab's store, newest first."""
    found = _read_store(config_file, lambda store: store.recent_sessions(limit))
    if found is None:
        return
    rows: list[tuple[Any, ...]] = [
        ("SESSION", "STARTED (UTC)", "MINUTES", "USER", "STATE", "REASON")
    ]
    for s in found:
        minutes = f"{(s.request.max_date - s.request.start_date) / 60:.1f}"
        reason = s.end_reason.value if s.end_reason else ""
        rows.append(
            (
                session_tag(s.sid),
                _utc(s.created_at),
                minutes,
                s.request.username_unique,
                s.state,
                reason,
            )
        )
    _table(rows)


@main.command()
@CONFIG
@LIMIT
def tasks(config_file: Path, limit: int) -> None:
    """List the most recent tasks in the lab's store, newest first."""
    found = _read_store(config_file, lambda store: store.recent_tasks(limit))
    if found is None:
        return
    rows: list[tuple[Any, ...]] = [
        ("TASK", "SUBMITTED (UTC)", "NAME", "STATUS", "SECONDS", "SESSION", "ERROR")
    ]
    for t in found:
        seconds = (
            f"{t.finished_at - t.started_at:.3f}"
            if t.started_at is not None and t.finished_at is not None
            else ""
        )
        rows.append(
            (
                t.task_id[:12],
                _utc(t.submitted_at),
                t.name,
                t.status,
                seconds,
                session_tag(t.session_id) if t.session_id else "",
                (t.error or {}).get("code", ""),
            )
        )
    _table(rows)

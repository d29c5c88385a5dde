"""``lab.toml``: read once, checked completely, frozen.

Every mistake is reported as one line naming the file, the key and what was expected, before
anything starts (``labrt check`` and ``labrt run`` then exit with status 2). Relative paths are
relative to the directory of the config file, so a lab runs the same from any working directory.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from drivers import Driver, OptionError
from drivers.kinds import KINDS, resolve_kind
from drivers.pins import PIN_FACTORIES

T = TypeVar("T")
D = TypeVar("D")  # a default, which is returned as it is, unparsed

PASSWORD_ENV = "LABRT_RLMS_PASSWORD"
CREDENTIAL = "rlms-password"  # the name of the systemd credential holding the RLMS password
EXAMPLE_PASSWORD = "labrt-example-password"
# Passwords anyone would try first; refused outside --dev.
KNOWN_DEFAULT_PASSWORDS = frozenset(
    {"", "password", "changeme", "change-me", "secret", "admin", "labrt", "weblab", "test"}
    | {EXAMPLE_PASSWORD}
)


class ConfigError(Exception):
    """A mistake in the configuration: where it is, and what was expected instead."""

    def __init__(self, file: Path | str, key: str | None, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        # One line, always: a quoted TOML key may hold a newline; show it escaped.
        key = self.key and re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m[0])[1:-1], self.key)
        where = f"{self.file}: {key}" if key else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class LabConfig:
    name: str
    module: str
    static: Path | None = None
    initial_url: str = "/"
    unauthorized_link: str | None = None
    max_concurrent_sessions: int | None = None
    spectators: bool = False
    templates: Path | None = None  # Jinja2 templates (the labrt[templates] extra)
    translations: Path | None = None  # gettext catalogs: <locale>/LC_MESSAGES/messages.mo


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = ""
    public_url: str = ""
    scheme: str = ""
    callback_url: str = "/callback"
    cookie_name: str = "labrt"
    cookie_path: str = "/"
    max_body_size: int = 1024 * 1024
    operator_access: str = "local"
    header_timeout: float = 20.0
    body_timeout: float = 60.0

    @property
    def prefix(self) -> str:
        """The path a proxy puts before the student's URLs (``public_url``'s path): labrt
        sees requests without it, but the links it sends browsers must carry it."""
        return urlsplit(self.public_url).path.rstrip("/")

    def link(self, url: str) -> str:
        """Where to send a browser: a path on this lab gets the proxy's prefix."""
        if url.startswith("/") and not url.startswith("//"):
            return self.prefix + url
        return url


@dataclass(frozen=True)
class RlmsConfig:
    username: str
    password: str = field(repr=False)
    password_file: Path | None = None  # where it was read from, if from a file
    source: str = "password"  # the key, environment variable or credential it came from


@dataclass(frozen=True)
class SessionConfig:
    timeout: float = 15.0
    poll_interval: int = 5
    expired_users_timeout: float = 3600.0
    dispose_timeout: float = 30.0
    start_timeout: float = 30.0


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    keep_days: float = 365.0


@dataclass(frozen=True)
class TasksConfig:
    threads: int = 3
    keep_results: float = 3600.0
    max_unfinished_per_session: int = 10
    max_results_per_session: int = 100


@dataclass(frozen=True)
class PushConfig:
    max_message_size: int = 64 * 1024
    messages_per_second: int = 120
    send_queue: int = 256
    # Anonymous pages cost the loop only their connection (their frames are not read), but
    # each still costs a socket, a queue and two tasks: a classroom screen or a few dozen
    # curious visitors fit, a script opening thousands does not.
    max_spectators: int = 100
    # Tabs of one student: a handful is normal; past it the oldest is closed, so a page that
    # reconnects in a loop cannot pile up sockets.
    max_sockets_per_session: int = 8


@dataclass(frozen=True)
class DriverConfig:
    """One ``[drivers.NAME]`` table: the driver class its ``kind`` names, and its options
    as the class validated them."""

    name: str
    kind: str
    driver: type[Driver]
    options: Mapping[str, Any]


@dataclass(frozen=True)
class HardwareConfig:
    pins: str = "auto"
    drivers: tuple[DriverConfig, ...] = ()
    # The folder of lab.toml, handed to the drivers (Environment.folder); None: the cwd.
    folder: Path | None = None


@dataclass(frozen=True)
class Config:
    file: Path
    lab: LabConfig
    server: ServerConfig
    rlms: RlmsConfig
    session: SessionConfig
    store: StoreConfig
    tasks: TasksConfig = TasksConfig()
    push: PushConfig = PushConfig()
    hardware: HardwareConfig = HardwareConfig()
    dev: bool = False
    # [settings]: the lab's own values, unchecked, frozen (tables read-only, arrays tuples).
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class _Bad(Exception):
    """A value was not what a key expects; carries the expectation in words."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


_MISSING: Any = object()


def _describe(value: Any) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{shown} ({kind})"


class _Section:
    """Reads one table of the file, remembering which keys were understood."""

    def __init__(self, file: Path, name: str, table: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(table, dict):
            raise ConfigError(file, f"[{name}]", f"expected a table, got {_describe(table)}")
        self.table: dict[str, Any] = table
        self.known: list[str] = []

    def key(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(key), message)

    @overload
    def get(self, key: str, parse: Callable[[Any], T]) -> T: ...
    @overload
    def get(self, key: str, parse: Callable[[Any], T], default: D) -> T | D: ...
    def get(self, key: str, parse: Callable[[Any], T], default: object = _MISSING) -> object:
        self.known.append(key)
        if key not in self.table:
            if default is _MISSING:
                raise self.error(key, f"missing; expected {_expectation(parse)}")
            return default
        value = self.table[key]
        try:
            return parse(value)
        except _Bad as bad:
            raise self.error(key, f"expected {bad.expected}, got {_describe(value)}") from None

    def has(self, key: str) -> bool:
        return key in self.table

    def finish(self) -> None:
        for key in self.table:
            if key not in self.known:
                close = difflib.get_close_matches(key, self.known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(self.known)
                raise self.error(key, f"unknown key (known keys: {known}){hint}")


def _expectation(parse: Callable[[Any], Any]) -> str:
    try:
        parse(_MISSING)
    except _Bad as bad:
        return bad.expected
    return "a value"


# -- value parsers: each raises _Bad(expected) ------------------------------------------------


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a string")
    return value


def _nonempty(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("a non-empty string")
    return value


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Bad(f"an integer from {low} to {high}")
        return value

    return parse


def _seconds(low: float, *, inclusive: bool = True) -> Callable[[Any], float]:
    bound = f"at least {low:g}" if inclusive else f"more than {low:g}"

    def parse(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (value < low if inclusive else value <= low)
        ):
            raise _Bad(f"a number of seconds, {bound}")
        return float(value)

    return parse


def _days(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 36500:
        raise _Bad("a number of days from 0 (keep everything) to 36500")
    return float(value)


def _any_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Bad("a number of seconds (0 or less disables it)")
    return float(value)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise _Bad("one of " + ", ".join(repr(o) for o in options))
        return value

    return parse


def _url_path(*, empty: bool, root: bool) -> Callable[[Any], str]:
    """A URL path like "/lab1": starts with '/', no trailing '/', nothing unsafe."""
    what = "a URL path starting with '/' and not ending with '/'"
    if empty:
        what = f'"" or {what}'

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad(what)
        if value == "" and empty:
            return value
        if value == "/" and root:
            return value
        if not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+", value):
            raise _Bad(what)
        return value

    return parse


def _http_url(value: Any) -> str:
    what = "an absolute http:// or https:// URL"
    if not isinstance(value, str) or re.search(r"[\s\x00-\x1f\x7f]", value):
        raise _Bad(what)
    try:
        parts = urlsplit(value)
    except ValueError:  # "http://[": a bracket urllib cannot read as IPv6; advice, not a traceback
        raise _Bad(what) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Bad(what)
    return value


def _link(value: Any) -> str:
    """Where a browser is sent: a path on this server or an absolute http(s) URL."""
    what = "a path starting with '/' or an absolute http(s) URL"
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//"):
        if re.search(r"[\s\x00-\x1f\x7f]", value):
            raise _Bad(what)
        return value
    try:
        return _http_url(value)
    except _Bad:
        raise _Bad(what) from None


def _public_url(value: Any) -> str:
    if value == "":
        return ""
    try:
        url = _http_url(value)
    except _Bad:
        raise _Bad('"" or an absolute http(s) URL, e.g. "https://lab.example.org"') from None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _Bad("an absolute http(s) URL without query or fragment")
    return url.rstrip("/")


def _cookie_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise _Bad("a cookie name of letters, digits, '_' and '-'")
    return value


def _host(value: Any) -> str:
    what = "an IP address or a host name"
    if not isinstance(value, str) or not value:
        raise _Bad(what)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
            raise _Bad(what) from None
    return value


def _module(value: Any) -> str:
    what = 'a path to a .py file or "package.module:attribute"'
    if not isinstance(value, str) or not value:
        raise _Bad(what)
    if value.endswith(".py") or "/" in value or os.sep in value:
        return value
    if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", value):
        raise _Bad(what)
    return value


_ENV_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _path_under(base: Path) -> Callable[[Any], Path]:
    """A path, relative to ``base``; ``~`` and ``$VARIABLE`` (e.g. systemd's
    ``$STATE_DIRECTORY``) are expanded, and an unset variable is a mistake, not a literal."""

    def parse(value: Any) -> Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise _Bad("a file system path")
        for match in _ENV_VAR.finditer(value):
            name = match.group(1) or match.group(2)
            if name not in os.environ:
                raise _Bad(f"a path whose environment variables are set (${name} is not)")
        path = (base / os.path.expanduser(os.path.expandvars(value))).resolve()
        try:
            path.exists()  # is_dir() and is_file() raise, not answer, for a name too long
        except OSError as exc:
            raise _Bad(f"a path the system accepts ({exc.strerror})") from None
        return path

    return parse


# -- sections ---------------------------------------------------------------------------------


def _lab(file: Path, table: Any) -> LabConfig:
    s = _Section(file, "lab", table)
    base = file.resolve().parent
    module = s.get("module", _module)
    if module.endswith(".py") or "/" in module or os.sep in module:
        path = (base / module).resolve()
        try:
            found = path.is_file()
        except OSError as exc:  # a name too long, say: advice, not a traceback
            raise s.error("module", f"expected a Python file: {exc.strerror}") from None
        if not found:
            raise s.error("module", f"expected a Python file, but {path} does not exist")
        module = str(path)
    static = s.get("static", _path_under(base), None)
    if static is not None and not static.is_dir():
        raise s.error("static", f"expected a directory of the lab's web files, not {static}")
    templates = s.get("templates", _path_under(base), None)
    if templates is not None and not templates.is_dir():
        raise s.error("templates", f"expected a directory of Jinja2 templates, not {templates}")
    if templates is not None and not _installed("jinja2", "aiohttp_jinja2"):
        raise s.error(
            "templates", "templates need Jinja2: pip install 'labrt[templates]' (aiohttp-jinja2)"
        )
    translations = s.get("translations", _path_under(base), None)
    if translations is not None and not translations.is_dir():
        raise s.error(
            "translations",
            f"expected a directory of gettext catalogs (<locale>/LC_MESSAGES/messages.mo), "
            f"not {translations}",
        )
    lab = LabConfig(
        name=s.get("name", _nonempty, file.stem),
        module=module,
        static=static,
        initial_url=s.get("initial_url", _link, "/"),
        unauthorized_link=s.get("unauthorized_link", _link, None),
        max_concurrent_sessions=s.get("max_concurrent_sessions", _integer(1, 10_000), None),
        spectators=s.get("spectators", _boolean, False),
        templates=templates,
        translations=translations,
    )
    s.finish()
    return lab


def _installed(*modules: str) -> bool:
    """Whether optional packages can be imported, without importing them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in modules)
    except (ImportError, ValueError):
        return False


def _server(file: Path, table: Any) -> ServerConfig:
    s = _Section(file, "server", table)
    server = ServerConfig(
        host=s.get("host", _host, ServerConfig.host),
        port=s.get("port", _integer(0, 65535), ServerConfig.port),
        base_url=s.get("base_url", _url_path(empty=True, root=False), ""),
        public_url=s.get("public_url", _public_url, ""),
        scheme=s.get("scheme", _choice("", "http", "https"), ""),
        callback_url=s.get("callback_url", _url_path(empty=False, root=False), "/callback"),
        cookie_name=s.get("cookie_name", _cookie_name, ServerConfig.cookie_name),
        cookie_path=s.get("cookie_path", _url_path(empty=False, root=True), "/"),
        max_body_size=s.get("max_body_size", _integer(1024, 1024**3), ServerConfig.max_body_size),
        operator_access=s.get("operator_access", _choice("local", "credentials", "open"), "local"),
        header_timeout=s.get(
            "header_timeout", _seconds(0, inclusive=False), ServerConfig.header_timeout
        ),
        body_timeout=s.get("body_timeout", _seconds(0, inclusive=False), ServerConfig.body_timeout),
    )
    s.finish()
    return server


def _rlms(file: Path, table: Any, *, dev: bool) -> RlmsConfig:
    s = _Section(file, "rlms", table)
    username = s.get("username", _nonempty)
    sources = [k for k in ("password", "password_file", "password_env") if s.has(k)]
    if len(sources) > 1:
        raise s.error(sources[1], "expected only one of password, password_file, password_env")
    source = sources[0] if sources else None
    password_path: Path | None = None
    if source == "password":
        password = s.get("password", _string)
    elif source == "password_file":
        path = password_path = s.get("password_file", _path_under(file.resolve().parent))
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise s.error("password_file", f"expected a readable UTF-8 file: {exc}") from None
    else:
        var = s.get("password_env", _nonempty, PASSWORD_ENV)
        credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / CREDENTIAL
        if var in os.environ:
            password = os.environ[var]
            source = f"environment variable {var}"
        elif not s.has("password_env") and credential.is_file():
            # systemd's LoadCredential=rlms-password:...: readable by this service alone.
            password = credential.read_text(encoding="utf-8").rstrip("\r\n")
            source = f"systemd credential {CREDENTIAL}"
        else:
            raise s.error(
                "password",
                f"missing; set password, password_file or password_env, "
                f"or the environment variable {var}, "
                f"or run under systemd with LoadCredential={CREDENTIAL}:FILE",
            )
    s.known.extend(k for k in ("password", "password_file", "password_env") if k not in s.known)
    s.finish()
    if password.strip().lower() in KNOWN_DEFAULT_PASSWORDS and not dev:
        raise s.error(
            source if source in ("password", "password_file") else "password_env",
            "expected a real password: this one is a well-known default "
            "(allowed only with --dev, on a development machine)",
        )
    return RlmsConfig(
        username=username, password=password, password_file=password_path, source=source
    )


def _session(file: Path, table: Any) -> SessionConfig:
    s = _Section(file, "session", table)
    session = SessionConfig(
        timeout=s.get("timeout", _any_seconds, SessionConfig.timeout),
        poll_interval=s.get("poll_interval", _integer(0, 3600), SessionConfig.poll_interval),
        expired_users_timeout=s.get(
            "expired_users_timeout", _seconds(0), SessionConfig.expired_users_timeout
        ),
        dispose_timeout=s.get(
            "dispose_timeout", _seconds(0, inclusive=False), SessionConfig.dispose_timeout
        ),
        start_timeout=s.get(
            "start_timeout", _seconds(0, inclusive=False), SessionConfig.start_timeout
        ),
    )
    s.finish()
    return session


def _store(file: Path, table: Any) -> StoreConfig:
    s = _Section(file, "store", table)
    path = s.get("path", _path_under(file.resolve().parent), file.resolve().parent / "labrt.sqlite")
    if path.is_dir():
        raise s.error("path", f"expected a file name for the SQLite store, {path} is a directory")
    if not path.parent.is_dir():
        raise s.error("path", f"expected a path in an existing directory: {path.parent} is not")
    keep_days = s.get("keep_days", _days, StoreConfig.keep_days)
    s.finish()
    return StoreConfig(path=path, keep_days=keep_days)


def _tasks(file: Path, table: Any) -> TasksConfig:
    s = _Section(file, "tasks", table)
    tasks = TasksConfig(
        threads=s.get("threads", _integer(1, 64), TasksConfig.threads),
        keep_results=s.get("keep_results", _seconds(0), TasksConfig.keep_results),
        max_unfinished_per_session=s.get(
            "max_unfinished_per_session",
            _integer(1, 10_000),
            TasksConfig.max_unfinished_per_session,
        ),
        max_results_per_session=s.get(
            "max_results_per_session", _integer(1, 100_000), TasksConfig.max_results_per_session
        ),
    )
    s.finish()
    return tasks


def _push(file: Path, table: Any) -> PushConfig:
    s = _Section(file, "push", table)
    push = PushConfig(
        max_message_size=s.get(
            "max_message_size", _integer(256, 16 * 1024 * 1024), PushConfig.max_message_size
        ),
        messages_per_second=s.get(
            "messages_per_second", _integer(1, 10_000), PushConfig.messages_per_second
        ),
        send_queue=s.get("send_queue", _integer(1, 100_000), PushConfig.send_queue),
        max_spectators=s.get("max_spectators", _integer(1, 100_000), PushConfig.max_spectators),
        max_sockets_per_session=s.get(
            "max_sockets_per_session", _integer(1, 1000), PushConfig.max_sockets_per_session
        ),
    )
    s.finish()
    return push


_DRIVER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _hardware(file: Path, table: Any, drivers: Any) -> HardwareConfig:
    s = _Section(file, "hardware", table)
    pins = s.get("pins", _choice(*PIN_FACTORIES), HardwareConfig.pins)
    s.finish()
    if not isinstance(drivers, dict):
        raise ConfigError(
            file, "[drivers]", f"expected tables like [drivers.led1], got {_describe(drivers)}"
        )
    found: list[DriverConfig] = []
    claimed: dict[str, str] = {}
    for name, options in drivers.items():
        where = f"[drivers.{name}]"
        if not _DRIVER_NAME.fullmatch(name):
            raise ConfigError(file, where, "expected a name of letters, digits and '_' (like led1)")
        if not isinstance(options, dict):
            raise ConfigError(file, where, f"expected a table, got {_describe(options)}")
        options = dict(options)
        kind = options.pop("kind", None)
        if not isinstance(kind, str) or not kind:
            known = ", ".join(KINDS)
            got = "nothing" if kind is None else _describe(kind)
            raise ConfigError(
                file,
                f"{where} kind",
                f'expected one of {known} or "package.module:Class", got {got}',
            )
        if ":" in kind and str(file.resolve().parent) not in sys.path:
            # Like the lab module: an author's kind may sit next to lab.toml.
            sys.path.insert(0, str(file.resolve().parent))
        try:
            driver = resolve_kind(kind)
            validated = driver.validate(options)
        except OptionError as exc:
            key = f"{where} {exc.key}" if exc.key else where
            plain = exc.expected.startswith(("unknown", "missing", "expected"))
            message = exc.expected if plain else f"expected {exc.expected}"
            raise ConfigError(file, key, message) from None
        timeout = driver.safe_timeout
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(
                file,
                f"{where} kind",
                f"expected a kind whose safe_timeout is a number of seconds greater than 0, "
                f"got {timeout!r}",
            )
        for pin in driver.gpio_pins(validated):
            label = re.sub(r"^GPIO", "", str(pin).upper())
            if label in claimed:
                raise ConfigError(
                    file,
                    f"{where} pin",
                    f"expected a pin of its own: {pin} is also [drivers.{claimed[label]}]'s",
                )
            claimed[label] = name
        found.append(DriverConfig(name, kind, driver, MappingProxyType(validated)))
    return HardwareConfig(pins=pins, drivers=tuple(found), folder=file.resolve().parent)


# The last, [settings], is the lab's own: free-form (see _settings).
_SECTIONS = (
    *("lab", "server", "rlms", "session", "store", "tasks", "push", "hardware", "drivers"),
    "settings",
)


def _frozen(value: Any) -> Any:
    """A TOML value made read-only all the way down: tables as mappings, arrays as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value  # str, int, float, bool, dates and times: immutable already


def _settings(file: Path, table: Any) -> Mapping[str, Any]:
    """``[settings]``: free-form (the lab's own keys, any TOML values), but a table."""
    if not isinstance(table, dict):
        raise ConfigError(
            file,
            "[settings]",
            f"expected a table of the lab's own settings ([settings] then key = value lines), "
            f"got {_describe(table)}",
        )
    frozen: Mapping[str, Any] = _frozen(table)
    return frozen


def load_config(path: Path | str, *, dev: bool = False) -> Config:
    """Read and check ``path``; raises :class:`ConfigError` on the first mistake found."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, None, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(file, None, "expected a TOML file, this is a directory") from None
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(file, None, "expected UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, None, f"invalid TOML: {exc}") from None
    for name in data:
        if name not in _SECTIONS:
            close = difflib.get_close_matches(name, _SECTIONS, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(
                file, f"[{name}]", f"unknown section (known: {', '.join(_SECTIONS)}){hint}"
            )
    for required in ("lab", "rlms"):
        if required not in data:
            raise ConfigError(file, f"[{required}]", "missing section")
    return Config(
        file=file.resolve(),
        lab=_lab(file, data["lab"]),
        server=_server(file, data.get("server", {})),
        rlms=_rlms(file, data["rlms"], dev=dev),
        session=_session(file, data.get("session", {})),
        store=_store(file, data.get("store", {})),
        tasks=_tasks(file, data.get("tasks", {})),
        push=_push(file, data.get("push", {})),
        hardware=_hardware(file, data.get("hardware", {}), data.get("drivers", {})),
        dev=dev,
        settings=_settings(file, data.get("settings", {})),
    )

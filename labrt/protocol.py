"""The RLMS wire protocol: both dialects parsed into one :class:`StartRequest`.

Nothing else in labrt sees dialect JSON. Anything malformed raises :class:`ProtocolError` naming
the field, which the web layer answers with a 400 before anything is stored. See protocol.md.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from .model import Dialect, StartRequest

MAX_SLOT_SECONDS = 366 * 24 * 3600  # a slot longer than a year is a mistake, not a booking
MAX_STRING = 4096
MAX_DEPTH = 64
MAX_SESSION_IDS = 10_000
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_UNSAFE_URL = re.compile(r"[\s\x00-\x1f\x7f<>\"\\^`{|}]")

# Legacy (WebLab-Deusto) server_initial_data keys.
_SLOT_START_TS = "priority.queue.slot.start.timestamp"
_SLOT_START = "priority.queue.slot.start"
_SLOT_LENGTH = "priority.queue.slot.length"


class ProtocolError(Exception):
    """A request the protocol does not allow; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def parse_json(raw: bytes) -> Any:
    """Decode a request body; JSON only (no NaN/Infinity), UTF-8, at most MAX_DEPTH deep, every
    number finite."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("body", "expected UTF-8 encoded JSON") from None
    if not text.strip():
        raise ProtocolError("body", "expected a JSON body, got an empty one")

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    overflowed = False

    def finite_float(number: str) -> float:
        # 1e400 is valid JSON but parses to inf. The scanner cannot say in which field, so it
        # is only noted here and found, with its path, after parsing (rarely: only then).
        nonlocal overflowed
        parsed = float(number)
        overflowed |= not math.isfinite(parsed)
        return parsed

    try:
        value = json.loads(text, parse_constant=no_constants, parse_float=finite_float)
    except RecursionError:
        raise ProtocolError("body", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ProtocolError("body", f"invalid JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError("body", f"JSON nested deeper than {MAX_DEPTH} levels")
    if overflowed:
        _refuse_non_finite(value)
    return value


def _refuse_non_finite(value: Any) -> None:
    """Refuse a number JSON can spell but a float cannot hold (``1e400``, ``-1e400``).

    It would parse to inf, which no answer, store row or page can carry (``dump_json`` refuses
    it, so it used to fail as a 500 after being accepted). The error names the field by its
    path (``request.user.big``, ``client_initial_data.list[0]``), as every protocol error does.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ProtocolError(path or "body", "expected a finite number, got one too large")
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}" if path else key) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


# -- field readers ------------------------------------------------------------------------


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(field, f"expected a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }[type(value)]


def _required(obj: dict[str, Any], key: str, field: str) -> Any:
    if key not in obj:
        raise ProtocolError(field, "missing")
    return obj[key]


def _string(value: Any, field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(field, f"expected a string, got {_kind(value)}")
    if len(value) > MAX_STRING:
        raise ProtocolError(field, f"longer than {MAX_STRING} characters")
    if "\x00" in value:
        raise ProtocolError(field, "contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may spell a lone surrogate ("\ud800"); no store or page can hold one.
            raise ProtocolError(field, "contains a lone UTF-16 surrogate, not text") from None
    return value


def _name(value: Any, field: str) -> str:
    text = _string(value, field)
    assert text is not None
    if not text.strip():
        raise ProtocolError(field, "expected a non-empty string")
    return text


def _number(value: Any, field: str, *, strings: bool) -> float:
    """A finite number; numeric strings too where the legacy dialect allows them.

    JSON integers have no size limit: one beyond a float's range (a 400-digit slot length)
    would raise OverflowError, a 500, if it were not refused here as too large."""
    if isinstance(value, str) and strings:
        try:
            value = float(value.strip())
        except ValueError:
            raise ProtocolError(field, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(field, f"expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(field, "expected a finite number, got one too large") from None
    if not math.isfinite(number):
        raise ProtocolError(field, "expected a finite number")
    return number


def _length(value: Any, field: str, *, strings: bool) -> float:
    length = _number(value, field, strings=strings)
    if length <= 0:
        raise ProtocolError(field, f"expected a positive number of seconds, got {length:g}")
    if length > MAX_SLOT_SECONDS:
        raise ProtocolError(field, f"expected at most {MAX_SLOT_SECONDS} seconds (366 days)")
    return length


def _epoch(value: float, field: str) -> float:
    if not 0 < value < 10_000_000_000:
        raise ProtocolError(field, "expected a UNIX timestamp in seconds")
    return value


def _back_url(value: Any, field: str) -> str:
    url = _string(value, field)
    assert url is not None
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[": urllib refuses a bracket it cannot read as IPv6
        raise ProtocolError(field, "expected an absolute http(s) URL: malformed") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or _UNSAFE_URL.search(url):
        raise ProtocolError(field, "expected an absolute http(s) URL without spaces")
    return url


def _iso_datetime(value: Any, field: str, *, naive_is_local: bool) -> float:
    text = _string(value, field)
    assert text is not None
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ProtocolError(field, f"expected an ISO-8601 date and time, got {text!r}") from None
    if when.tzinfo is None and not naive_is_local:
        raise ProtocolError(
            field, "expected a date with a UTC offset (like +00:00 or Z), got a naive one"
        )
    try:
        return _epoch(when.timestamp(), field)
    except (OverflowError, OSError, ValueError, ProtocolError):
        # Caught from _epoch too: its "UNIX timestamp" wording would puzzle whoever sent a date.
        raise ProtocolError(field, f"date out of range (1970 to 2286): {text!r}") from None


# -- start --------------------------------------------------------------------------------


def parse_start(dialect: Dialect, body: Any) -> StartRequest:
    if dialect is Dialect.LEGACY:
        return _parse_legacy(body)
    return _parse_new(body)


def _parse_legacy(body: Any) -> StartRequest:
    body = _object(body, "body")
    client_data = _required(body, "client_initial_data", "client_initial_data")
    server = _object(
        _required(body, "server_initial_data", "server_initial_data"), "server_initial_data"
    )
    back = _back_url(_required(body, "back", "back"), "back")

    def server_field(key: str) -> Any:
        return _required(server, key, f"server_initial_data.{key}")

    start: float
    if server.get(_SLOT_START_TS):
        field = f"server_initial_data.{_SLOT_START_TS}"
        start = _epoch(_number(server[_SLOT_START_TS], field, strings=True), field)
    else:
        field = f"server_initial_data.{_SLOT_START}"
        # Historically the lab's local time; labrt also takes ISO dates with an offset.
        start = _iso_datetime(server_field(_SLOT_START), field, naive_is_local=True)
    length = _length(
        server_field(_SLOT_LENGTH), f"server_initial_data.{_SLOT_LENGTH}", strings=True
    )
    name = _name(
        server_field("request.experiment_id.experiment_name"),
        "server_initial_data.request.experiment_id.experiment_name",
    )
    # Required keys, but LabDiscoveryEngine sends null for a lab without a category and a
    # student without a full name.
    category = _string(
        server_field("request.experiment_id.category_name"),
        "server_initial_data.request.experiment_id.category_name",
        optional=True,
    )
    return StartRequest(
        dialect=Dialect.LEGACY,
        username=_name(server_field("request.username"), "server_initial_data.request.username"),
        username_unique=_name(
            server_field("request.username.unique"),
            "server_initial_data.request.username.unique",
        ),
        full_name=_string(
            server_field("request.full_name"),
            "server_initial_data.request.full_name",
            optional=True,
        ),
        locale=_string(
            server.get("request.locale"), "server_initial_data.request.locale", optional=True
        ),
        back=back,
        experiment_name=name,
        category_name=category,
        experiment_id=f"{name}@{category}" if category else name,
        client_data=client_data,
        server_data=server,
        start_date=start,
        max_date=start + length,
    )


def _parse_new(body: Any) -> StartRequest:
    body = _object(body, "body")
    request = _object(_required(body, "request", "request"), "request")
    laboratory = _object(_required(body, "laboratory", "laboratory"), "laboratory")
    student = _object(_required(body, "user", "user"), "user")
    schedule = _object(_required(body, "schedule", "schedule"), "schedule")

    locale = _string(request.get("locale", "en"), "request.locale", optional=True)
    name = _name(_required(laboratory, "name", "laboratory.name"), "laboratory.name")
    category = _string(laboratory.get("category"), "laboratory.category", optional=True)
    start = _iso_datetime(
        _required(schedule, "start", "schedule.start"), "schedule.start", naive_is_local=False
    )
    length = _length(
        _required(schedule, "length", "schedule.length"), "schedule.length", strings=False
    )
    return StartRequest(
        dialect=Dialect.NEW,
        username=_name(_required(student, "username", "user.username"), "user.username"),
        username_unique=_name(_required(student, "unique", "user.unique"), "user.unique"),
        full_name=_string(student.get("fullName"), "user.fullName", optional=True),
        locale=locale,
        back=_back_url(_required(request, "backUrl", "request.backUrl"), "request.backUrl"),
        experiment_name=name,
        category_name=category,
        experiment_id=f"{name}@{category}" if category else name,
        client_data=request.get("user"),
        server_data=request.get("server"),
        start_date=start,
        max_date=start + length,
    )


# -- other requests -------------------------------------------------------------------------


def check_session_id(sid: str) -> str:
    if not SESSION_ID.fullmatch(sid):
        raise ProtocolError("session_id", "expected a session id of letters, digits, '_' or '-'")
    return sid


def parse_status_multiple(body: Any) -> tuple[list[str], float | None] | None:
    """The ids and the optional deadline; None when ``session_ids`` is missing (a 200 answer)."""
    body = _object(body, "body")
    ids = body.get("session_ids")
    if ids is None:
        return None
    if not isinstance(ids, list):
        raise ProtocolError("session_ids", f"expected an array of strings, got {_kind(ids)}")
    if len(ids) > MAX_SESSION_IDS:
        raise ProtocolError("session_ids", f"expected at most {MAX_SESSION_IDS} ids")
    for i, sid in enumerate(ids):
        if not isinstance(sid, str):
            raise ProtocolError(f"session_ids[{i}]", f"expected a string, got {_kind(sid)}")
    timeout = body.get("timeout")
    if timeout is not None:
        timeout = _number(timeout, "timeout", strings=True)
        if timeout <= 0:
            timeout = None  # as the original libraries: no deadline
    return ids, timeout


def is_delete(body: Any) -> bool:
    """Whether a legacy dispose POST asks to delete (anything else is an "Unknown op")."""
    return _object(body, "body").get("action") == "delete"


# -- the RLMS side, for `labrt fake` -----------------------------------------------------------


def start_body(dialect: Dialect, r: StartRequest) -> dict[str, Any]:
    """The body an RLMS of ``dialect`` sends to start ``r`` (what `labrt fake new` posts)."""
    start_iso = dt.datetime.fromtimestamp(r.start_date, dt.UTC).isoformat()
    length = r.max_date - r.start_date
    if dialect is Dialect.LEGACY:
        server: dict[str, Any] = {
            _SLOT_START_TS: r.start_date,
            _SLOT_START: start_iso,
            _SLOT_LENGTH: length,
            "request.username": r.username,
            "request.username.unique": r.username_unique,
            "request.full_name": r.full_name,
            "request.locale": r.locale,
            "request.experiment_id.experiment_name": r.experiment_name,
            "request.experiment_id.category_name": r.category_name,
        }
        if isinstance(r.server_data, dict):
            server.update(r.server_data)
        return {"client_initial_data": r.client_data, "server_initial_data": server, "back": r.back}
    return {
        "request": {
            "locale": r.locale,
            "user": r.client_data,
            "server": r.server_data,
            "backUrl": r.back,
        },
        "laboratory": {"name": r.experiment_name, "category": r.category_name},
        "user": {"username": r.username, "unique": r.username_unique, "fullName": r.full_name},
        "schedule": {"start": start_iso, "length": length},
    }

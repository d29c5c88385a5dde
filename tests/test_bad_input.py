"""Bad input on every endpoint: a 4xx JSON answer that says what is wrong, nothing stored, and
the server still serving the student who was already in the lab.

Requests go over a raw socket so that paths reach the server exactly as written (no client
normalising ``..`` or ``%2F``) and headers may hold bytes no HTTP library would send.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from helpers import (
    AUTH,
    BODIES,
    PASSWORD,
    PREFIXES,
    RECORDING_LAB,
    USERNAME,
    Harness,
    raw_exchange,
    serve_lab,
    store_bytes,
)
from multidict import CIMultiDict

from labrt.web.signing import CookieSigner

LDL, WEBLAB = PREFIXES["ldl"], PREFIXES["weblab"]
SLOT_LENGTH = "priority.queue.slot.length"
SLOT_START = "priority.queue.slot.start"
SLOT_START_TS = "priority.queue.slot.start.timestamp"
SERVER = "server_initial_data"


@dataclass
class Ctx:
    """What a case may need to build its request: the running lab and its valid session."""

    lab: Harness
    sid: str
    now: float
    secret: bytes


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    content: bytes

    @property
    def mimetype(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.content)


Body = bytes | Callable[[Ctx], bytes] | None
Headers = dict[str, str | bytes] | Callable[[Ctx], dict[str, str | bytes]]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    target: str  # sent as written; "{sid}" becomes the valid session's id
    status: int
    says: tuple[str, ...]  # fragments the message must contain (case-insensitive)
    body: Body = None
    headers: Headers = field(default_factory=dict)
    auth: str | bytes | None = AUTH["Authorization"]
    field: str | None = None  # the "field" a protocol error must name
    allow: str | None = None  # a method the Allow header of a 405 must list
    extra: str = ""  # config sections for this case's lab
    never: tuple[bytes, ...] = ()  # bytes that must not appear in the answer
    check: Callable[[Any], None] | None = None  # more about the JSON body
    realm: bool = False  # a 401 for the RLMS: must ask for basic auth


async def send(
    ctx: Ctx, method: str, target: str, headers: dict[str, str | bytes], body: bytes | None
) -> Reply:
    """One HTTP/1.1 request on its own connection, bytes exactly as given."""
    server = ctx.lab.server
    fields: dict[str, str | bytes] = {"Host": f"{server.host}:{server.port}", **headers}
    if body is not None and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    fields["Connection"] = "close"
    head = f"{method} {target} HTTP/1.1\r\n".encode()
    for name, value in fields.items():
        head += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        head += b"\r\n"
    assert server.host is not None and server.port is not None
    return Reply(*await raw_exchange(server.host, server.port, head + b"\r\n" + (body or b"")))


def message_of(body: Any) -> str:
    if isinstance(body, dict) and "error_messages" in body:
        return " ".join(body["error_messages"])
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    return body["message"]


# -- building cases ---------------------------------------------------------------------------

DROP = object()


def start_body(
    dialect: str, *path: str, value: Any = DROP, start: float = 0
) -> Callable[[Ctx], Any]:
    """A valid start body of ``dialect`` with ``path`` removed (or set to ``value``)."""

    def build(ctx: Ctx) -> Any:
        body = BODIES[dialect](ctx.now + start)
        if path:
            *parents, last = path
            target = body
            for key in parents:
                target = target[key]
            if value is DROP:
                del target[last]
            else:
                target[last] = value
        return body

    return build


def as_json(build: Callable[[Ctx], Any]) -> Callable[[Ctx], bytes]:
    return lambda ctx: json.dumps(build(ctx)).encode()


def start(
    case_id: str,
    dialect: str,
    path: tuple[str, ...],
    field_name: str,
    *says: str,
    value: Any = DROP,
    status: int = 400,
) -> Case:
    return Case(
        case_id,
        "POST",
        f"{PREFIXES[dialect]}/",
        status,
        (field_name, *says),
        body=as_json(start_body(dialect, *path, value=value)),
        field=field_name,
    )


def legacy_missing(key: str) -> Case:
    path = (key,) if key in ("client_initial_data", SERVER, "back") else (SERVER, key)
    name = ".".join(path)
    return start(f"weblab-missing-{key}", "weblab", path, name, "missing")


def new_missing(name: str) -> Case:
    return start(f"ldl-missing-{name}", "ldl", tuple(name.split(".")), name, "missing")


def raw_text(dialect: str, *replacements: str) -> Callable[[Ctx], bytes]:
    """A valid start body's JSON text with pairs of (old, new) text replaced in it, for what a
    JSON encoder would not write (NaN) or to rename a key."""

    def build(ctx: Ctx) -> bytes:
        text = json.dumps(BODIES[dialect](ctx.now))
        for old, new in zip(replacements[::2], replacements[1::2], strict=True):
            assert old in text
            text = text.replace(old, new)
        return text.encode()

    return build


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def cookie(value: Callable[[Ctx], str]) -> Callable[[Ctx], dict[str, str | bytes]]:
    return lambda ctx: {"Cookie": f"labrt={value(ctx)}"}


def anonymous(body: Any) -> None:
    assert body["state"] == "anonymous"


def invalid_on_test(body: Any) -> None:
    assert body["valid"] is False and isinstance(body["error_messages"], list)


BODY_CASES = [
    Case("invalid-json", "POST", f"{LDL}/", 400, ("invalid json",), b'{"request": ', field="body"),
    Case("not-utf8", "POST", f"{LDL}/", 400, ("utf-8",), b'{"request": "\xff\xfe"}', field="body"),
    Case("empty-body", "POST", f"{WEBLAB}/", 400, ("empty",), b"", field="body"),
    Case("blank-body", "POST", f"{LDL}/", 400, ("empty",), b" \r\n\t", field="body"),
    Case("array-body", "POST", f"{LDL}/", 400, ("object", "array"), b"[]", field="body"),
    Case("null-body", "POST", f"{WEBLAB}/", 400, ("object", "null"), b"null", field="body"),
    Case("number-body", "POST", f"{LDL}/", 400, ("object", "number"), b"42", field="body"),
    Case("string-body", "POST", f"{WEBLAB}/", 400, ("object", "string"), b'"hi"', field="body"),
    Case(
        "nan-literal-length",
        "POST",
        f"{LDL}/",
        400,
        ("nan",),
        raw_text("ldl", '"length": 300', '"length": NaN'),
        field="body",
    ),
    Case(
        "infinity-literal-length",
        "POST",
        f"{WEBLAB}/",
        400,
        ("infinity",),
        raw_text("weblab", f'"{SLOT_LENGTH}": "300"', f'"{SLOT_LENGTH}": -Infinity'),
        field="body",
    ),
    Case(
        "overflowing-length-1e400",
        "POST",
        f"{LDL}/",
        400,
        ("schedule.length", "finite"),
        raw_text("ldl", '"length": 300', '"length": 1e400'),
        field="schedule.length",
    ),
    Case("nested-10000-start", "POST", f"{LDL}/", 400, ("nested",), deep(10000), field="body"),
    Case(
        "nested-10000-multiple",
        "POST",
        f"{WEBLAB}/status/multiple",
        400,
        ("nested",),
        b'{"session_ids": ' + deep(10000) + b"}",
        field="body",
    ),
    Case(
        "nested-100-in-client-data",
        "POST",
        f"{WEBLAB}/",
        400,
        ("nested",),
        raw_text(
            "weblab", '"client_initial_data": {}', '"client_initial_data": ' + "[" * 100 + "]" * 100
        ),
        field="body",
    ),
]

SMALL = "[server]\nmax_body_size = 2048\n"
TOO_LARGE = b'{"x": "' + b"a" * 3000 + b'"}'


def chunked(data: bytes, size: int = 1000) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SIZE_CASES = [
    Case(
        f"too-large-{name}",
        method,
        target,
        413,
        ("larger than", "2048 bytes"),
        TOO_LARGE,
        extra=SMALL,
    )
    for name, method, target in [
        ("start", "POST", f"{LDL}/"),
        ("multiple", "POST", f"{LDL}/status/multiple"),
        ("dispose", "POST", f"{WEBLAB}/{{sid}}"),
    ]
] + [
    Case(
        "too-large-chunked-start",
        "POST",
        f"{WEBLAB}/",
        413,
        ("larger than", "2048 bytes"),
        chunked(TOO_LARGE),
        headers={"Transfer-Encoding": "chunked"},
        extra=SMALL,
    )
]

MISSING_CASES = [
    *(
        legacy_missing(key)
        for key in [
            "client_initial_data",
            SERVER,
            "back",
            SLOT_LENGTH,
            "request.username",
            "request.username.unique",
            "request.full_name",
            "request.experiment_id.experiment_name",
            "request.experiment_id.category_name",
        ]
    ),
    Case(
        "weblab-missing-slot-start",
        "POST",
        f"{WEBLAB}/",
        400,
        (f"{SERVER}.{SLOT_START}", "missing"),
        lambda ctx: json.dumps(_no_slot_start(start_body("weblab")(ctx))).encode(),
        field=f"{SERVER}.{SLOT_START}",
    ),
    *(
        new_missing(name)
        for name in [
            "request",
            "laboratory",
            "user",
            "schedule",
            "request.backUrl",
            "laboratory.name",
            "user.username",
            "user.unique",
            "schedule.start",
            "schedule.length",
        ]
    ),
]


def _no_slot_start(body: dict[str, Any]) -> dict[str, Any]:
    del body[SERVER][SLOT_START_TS], body[SERVER][SLOT_START]
    return body


S = (SERVER,)
TYPE_CASES = [
    start("ldl-username-number", "ldl", ("user", "username"), "user.username", "string", value=42),
    start("ldl-request-string", "ldl", ("request",), "request", "object", value="x"),
    start("ldl-user-array", "ldl", ("user",), "user", "object", value=[]),
    start("ldl-laboratory-string", "ldl", ("laboratory",), "laboratory", "object", value="blink"),
    start("ldl-schedule-null", "ldl", ("schedule",), "schedule", "object", value=None),
    start(
        "ldl-length-bool", "ldl", ("schedule", "length"), "schedule.length", "number", value=True
    ),
    start(
        "ldl-length-string", "ldl", ("schedule", "length"), "schedule.length", "string", value="300"
    ),
    start(
        "ldl-name-empty", "ldl", ("laboratory", "name"), "laboratory.name", "non-empty", value=" "
    ),
    start(
        "ldl-category-number",
        "ldl",
        ("laboratory", "category"),
        "laboratory.category",
        "string",
        value=7,
    ),
    start("ldl-fullname-object", "ldl", ("user", "fullName"), "user.fullName", "string", value={}),
    start("ldl-locale-number", "ldl", ("request", "locale"), "request.locale", "string", value=5),
    start(
        "ldl-backurl-number", "ldl", ("request", "backUrl"), "request.backUrl", "string", value=1
    ),
    start(
        "ldl-username-too-long",
        "ldl",
        ("user", "unique"),
        "user.unique",
        "longer than",
        value="x" * 5000,
    ),
    start("ldl-username-nul", "ldl", ("user", "username"), "user.username", "nul", value="a\x00b"),
    start("weblab-server-data-string", "weblab", S, SERVER, "object", value="x"),
    start("weblab-back-number", "weblab", ("back",), "back", "string", value=5),
    start(
        "weblab-length-bool",
        "weblab",
        (*S, SLOT_LENGTH),
        f"{SERVER}.{SLOT_LENGTH}",
        "number",
        value=True,
    ),
    start(
        "weblab-length-array",
        "weblab",
        (*S, SLOT_LENGTH),
        f"{SERVER}.{SLOT_LENGTH}",
        "number",
        value=[300],
    ),
    start(
        "weblab-username-null",
        "weblab",
        (*S, "request.username"),
        f"{SERVER}.request.username",
        "string",
        value=None,
    ),
    start(
        "weblab-category-number",
        "weblab",
        (*S, "request.experiment_id.category_name"),
        f"{SERVER}.request.experiment_id.category_name",
        "string",
        value=3,
    ),
    start(
        "weblab-timestamp-bool",
        "weblab",
        (*S, SLOT_START_TS),
        f"{SERVER}.{SLOT_START_TS}",
        "number",
        value=True,
    ),
]

DATE_CASES = [
    start(
        "ldl-naive-date",
        "ldl",
        ("schedule", "start"),
        "schedule.start",
        "naive",
        value="2026-11-24T10:00:00",
    ),
    start(
        "ldl-unparseable-date",
        "ldl",
        ("schedule", "start"),
        "schedule.start",
        "iso-8601",
        value="tomorrow at ten",
    ),
    start(
        "ldl-date-as-number",
        "ldl",
        ("schedule", "start"),
        "schedule.start",
        "string",
        value=1764000000,
    ),
    start(
        "ldl-date-year-9999",
        "ldl",
        ("schedule", "start"),
        "schedule.start",
        "out of range",
        value="9999-12-31T00:00:00+00:00",
    ),
    start(
        "weblab-timestamp-text",
        "weblab",
        (*S, SLOT_START_TS),
        f"{SERVER}.{SLOT_START_TS}",
        "number",
        value="soon",
    ),
    start(
        "weblab-timestamp-negative",
        "weblab",
        (*S, SLOT_START_TS),
        f"{SERVER}.{SLOT_START_TS}",
        "timestamp",
        value=-5,
    ),
    Case(
        "weblab-slot-start-1900",
        "POST",
        f"{WEBLAB}/",
        400,
        (f"{SERVER}.{SLOT_START}", "out of range"),
        raw_text(
            "weblab", f'"{SLOT_START_TS}": ', '"ignored": ', "2026-11-24 10:00", "1900-01-01 10:00"
        ),
        field=f"{SERVER}.{SLOT_START}",
    ),
    Case(
        "weblab-unparseable-slot-start",
        "POST",
        f"{WEBLAB}/",
        400,
        (f"{SERVER}.{SLOT_START}", "iso-8601"),
        # Without the timestamp the lab reads the local-time date, which must parse.
        raw_text(
            "weblab",
            f'"{SLOT_START_TS}": ',
            '"ignored": ',
            "2026-11-24 10:00:00.000000",
            "24/11/2026 10h",
        ),
        field=f"{SERVER}.{SLOT_START}",
    ),
]

LENGTH = (*S, SLOT_LENGTH)
LEGACY_LENGTH = f"{SERVER}.{SLOT_LENGTH}"
LENGTH_CASES = [
    start(
        "ldl-length-negative",
        "ldl",
        ("schedule", "length"),
        "schedule.length",
        "positive",
        value=-5,
    ),
    start("ldl-length-zero", "ldl", ("schedule", "length"), "schedule.length", "positive", value=0),
    start(
        "ldl-length-huge", "ldl", ("schedule", "length"), "schedule.length", "at most", value=1e12
    ),
    start("weblab-length-negative-text", "weblab", LENGTH, LEGACY_LENGTH, "positive", value="-1"),
    start("weblab-length-nan-text", "weblab", LENGTH, LEGACY_LENGTH, "finite", value="NaN"),
    start("weblab-length-infinity-text", "weblab", LENGTH, LEGACY_LENGTH, "finite", value="inf"),
    start("weblab-length-words", "weblab", LENGTH, LEGACY_LENGTH, "number", value="five minutes"),
    start("weblab-length-huge", "weblab", LENGTH, LEGACY_LENGTH, "at most", value="1e15"),
]

ENDED_CASES = [
    Case(
        f"{dialect}-slot-already-ended",
        "POST",
        f"{PREFIXES[dialect]}/",
        409,
        ("slot ended",),
        as_json(start_body(dialect, start=-3600)),
    )
    for dialect in PREFIXES
]

BACK_CASES = [
    start(
        "weblab-back-javascript", "weblab", ("back",), "back", "http", value="javascript:alert(1)"
    ),
    start("weblab-back-relative", "weblab", ("back",), "back", "absolute", value="/after"),
    start(
        "weblab-back-crlf",
        "weblab",
        ("back",),
        "back",
        "http",
        value="https://rlms.example/\r\nSet-Cookie: admin=1",
    ),
    start(
        "ldl-back-lf",
        "ldl",
        ("request", "backUrl"),
        "request.backUrl",
        "http",
        value="https://lde.example/\nLocation: https://evil.example/",
    ),
    start(
        "ldl-back-data-url",
        "ldl",
        ("request", "backUrl"),
        "request.backUrl",
        "http",
        value="data:text/html,<script>alert(1)</script>",
    ),
    start(
        "ldl-back-space",
        "ldl",
        ("request", "backUrl"),
        "request.backUrl",
        "spaces",
        value="https://lde.example/a b",
    ),
]

HOST_CASES = [
    Case(
        f"bad-host-{name}",
        "POST",
        f"{LDL}/",
        400,
        ("host",),
        as_json(start_body("ldl")),
        headers={"Host": host},
        field="Host",
    )
    for name, host in [("path", "evil.example/<x>"), ("quote", 'lab.example"onload=x')]
]

MULTIPLE = f"{LDL}/status/multiple"
MULTIPLE_CASES = [
    Case(
        "multiple-ids-string",
        "POST",
        MULTIPLE,
        400,
        ("session_ids", "array"),
        b'{"session_ids": "abc"}',
        field="session_ids",
    ),
    Case(
        "multiple-ids-object",
        "POST",
        MULTIPLE,
        400,
        ("session_ids", "array"),
        b'{"session_ids": {"a": 1}}',
        field="session_ids",
    ),
    Case(
        "multiple-ids-numbers",
        "POST",
        MULTIPLE,
        400,
        ("session_ids[0]", "string"),
        b'{"session_ids": [1, 2]}',
        field="session_ids[0]",
    ),
    Case(
        "multiple-ids-mixed",
        "POST",
        MULTIPLE,
        400,
        ("session_ids[1]", "string"),
        b'{"session_ids": ["a", null]}',
        field="session_ids[1]",
    ),
    Case(
        "multiple-too-many-ids",
        "POST",
        MULTIPLE,
        400,
        ("session_ids", "at most 10000"),
        json.dumps({"session_ids": [str(i) for i in range(10_001)]}).encode(),
        field="session_ids",
    ),
    Case("multiple-array-body", "POST", MULTIPLE, 400, ("object",), b'["a"]', field="body"),
    Case(
        "multiple-invalid-json",
        "POST",
        MULTIPLE,
        400,
        ("invalid json",),
        b"{session_ids: []}",
        field="body",
    ),
    Case(
        "multiple-timeout-words",
        "POST",
        MULTIPLE,
        400,
        ("timeout", "number"),
        b'{"session_ids": [], "timeout": "soon"}',
        field="timeout",
    ),
]

# Numbers JSON can spell but Python cannot hold: 1e400 parses to inf, which no answer or store
# row can carry, and a 400-digit integer overflows a float. Each is refused naming its field.
HUGE = "1" + "0" * 399  # 400 digits
ONE_E400 = [
    ("ldl-client-data", "ldl", '"user": {}', '"user": {"big": 1e400}', "request.user.big"),
    ("ldl-request-server", "ldl", '"tag": "x"', '"tag": 1e400', "request.server.tag"),
    ("ldl-length", "ldl", '"length": 300', '"length": -1e400', "schedule.length"),
    (
        "weblab-client-data",
        "weblab",
        '"client_initial_data": {}',
        '"client_initial_data": {"big": [1e400]}',
        "client_initial_data.big[0]",
    ),
    (
        "weblab-server-data",
        "weblab",
        '"reservation_id": "r-1"',
        '"reservation_id": 1e400',
        f"{SERVER}.reservation_id",
    ),
    (
        "weblab-length",
        "weblab",
        f'"{SLOT_LENGTH}": "300"',
        f'"{SLOT_LENGTH}": -1e400',
        f"{SERVER}.{SLOT_LENGTH}",
    ),
]
NUMBER_CASES = [
    Case(
        f"{name}-1e400",
        "POST",
        f"{PREFIXES[dialect]}/",
        400,
        (name_of_field, "finite"),
        raw_text(dialect, old, new),
        field=name_of_field,
    )
    for name, dialect, old, new, name_of_field in ONE_E400
] + [
    Case(
        "ldl-length-400-digits",
        "POST",
        f"{LDL}/",
        400,
        ("schedule.length", "too large"),
        raw_text("ldl", '"length": 300', f'"length": {HUGE}'),
        field="schedule.length",
    ),
    Case(
        "weblab-length-400-digits",
        "POST",
        f"{WEBLAB}/",
        400,
        (f"{SERVER}.{SLOT_LENGTH}", "too large"),
        raw_text("weblab", f'"{SLOT_LENGTH}": "300"', f'"{SLOT_LENGTH}": {HUGE}'),
        field=f"{SERVER}.{SLOT_LENGTH}",
    ),
    Case(
        "weblab-length-400-digit-text",
        "POST",
        f"{WEBLAB}/",
        400,
        (f"{SERVER}.{SLOT_LENGTH}", "finite"),
        raw_text("weblab", f'"{SLOT_LENGTH}": "300"', f'"{SLOT_LENGTH}": "{HUGE}"'),
        field=f"{SERVER}.{SLOT_LENGTH}",
    ),
    Case(
        "multiple-timeout-400-digits",
        "POST",
        MULTIPLE,
        400,
        ("timeout", "too large"),
        b'{"session_ids": ["{sid}"], "timeout": ' + HUGE.encode() + b"}",
        field="timeout",
    ),
    Case(
        "multiple-timeout-1e400",
        "POST",
        f"{WEBLAB}/status/multiple",
        400,
        ("timeout", "finite"),
        b'{"session_ids": ["{sid}"], "timeout": -1e400}',
        field="timeout",
    ),
]

DISPOSE_CASES = [
    Case(f"dispose-post-{name}", "POST", f"{prefix}/{{sid}}", 400, says, raw, field="body")
    for name, prefix, raw, says in [
        ("array", WEBLAB, b'["delete"]', ("object", "array")),
        ("string", WEBLAB, b'"delete"', ("object", "string")),
        ("null", LDL, b"null", ("object", "null")),
        ("number", WEBLAB, b"1", ("object", "number")),
        ("invalid-json", WEBLAB, b"action=delete", ("invalid json",)),
        ("not-utf8", LDL, b'{"action": "d\xe9lete"}', ("utf-8",)),
    ]
]

ODD_SIDS = {
    "dotdot": "..",
    "dotdot-encoded": "%2e%2e",
    "slash-encoded": "a%2Fb",
    "200-chars": "a" * 200,
}
SID_CASES = [
    Case(
        f"{what}-sid-{name}",
        method,
        target.format(sid=sid),
        400,
        ("session id",),
        body,
        field="session_id",
    )
    for name, sid in ODD_SIDS.items()
    for what, method, target, body in [
        ("status", "GET", LDL + "/{sid}/status", None),
        ("dispose-post", "POST", WEBLAB + "/{sid}", b'{"action": "delete"}'),
        ("delete", "DELETE", LDL + "/{sid}", None),
    ]
]

AUTH_ENDPOINTS = {
    "test": ("GET", f"{LDL}/test", None),
    "start": ("POST", f"{LDL}/", as_json(start_body("ldl"))),
    "status": ("GET", f"{LDL}/{{sid}}/status", None),
    "multiple": ("POST", f"{WEBLAB}/status/multiple", b'{"session_ids": ["{sid}"]}'),
    "dispose-post": ("POST", f"{WEBLAB}/{{sid}}", b'{"action": "delete"}'),
    "delete": ("DELETE", f"{LDL}/{{sid}}", None),
}
BAD_AUTH: dict[str, str | bytes | None] = {
    "none": None,
    "wrong-password": basic(f"{USERNAME}:{PASSWORD}x".encode()),
    "wrong-username": basic(f"{USERNAME}x:{PASSWORD}".encode()),
    "not-base64": "Basic !!not base64!!",
    "no-colon": basic(f"{USERNAME}{PASSWORD}".encode()),
    "not-utf8": basic(b"rlms\xff:" + PASSWORD.encode()),
    "non-ascii-header": "Basic \u00e9t\u00e9".encode(),
    "latin1-header": b"Basic \xe9t\xe9",
    "bearer": f"Bearer {PASSWORD}",
}
AUTH_CASES = [
    Case(
        f"auth-{endpoint}-{name}",
        method,
        target,
        401,
        ("credentials",),
        body,
        auth=auth,
        check=invalid_on_test if endpoint == "test" else None,
        realm=True,
    )
    for endpoint, (method, target, body) in AUTH_ENDPOINTS.items()
    for name, auth in BAD_AUTH.items()
] + [
    Case(
        f"auth-weblab-test-{name}",
        "GET",
        f"{WEBLAB}/test",
        401,
        ("credentials",),
        auth=BAD_AUTH[name],
        check=invalid_on_test,
        realm=True,
    )
    for name in ("none", "wrong-password", "not-base64")
]


def _signed(secret: bytes, cookie_name: str, sid: str) -> str:
    signer = CookieSigner(cookie_name)
    signer.use(secret)
    return signer.sign(sid)


FORGED_COOKIES: dict[str, Callable[[Ctx], str]] = {
    "random": lambda ctx: "d2hhdGV2ZXI.bm90LWEtbWFj",
    "wrong-signature": lambda ctx: f"{ctx.sid}.{'A' * 43}",
    "unsigned-sid": lambda ctx: ctx.sid,
    "other-lab": lambda ctx: _signed(ctx.secret, "otherlab", ctx.sid),
    "oversized": lambda ctx: _signed(ctx.secret, "labrt", "A" * 4000),
}
COOKIE_CASES = (
    [
        Case(
            f"cookie-{name}-status",
            "GET",
            "/labrt/status",
            401,
            ("no session",),
            headers=cookie(value),
            auth=None,
            check=anonymous,
        )
        for name, value in FORGED_COOKIES.items()
    ]
    + [
        Case(
            f"cookie-{name}-visit",
            "POST",
            "/api/visit",
            403,
            ("forbidden",),
            headers=cookie(value),
            auth=None,
        )
        for name, value in FORGED_COOKIES.items()
    ]
    + [
        Case(f"callback-{name}", "GET", f"/callback/{sid}", 403, ("forbidden",), auth=None)
        for name, sid in [("unknown", "x" * 43), ("dotdot-encoded", "%2e%2e"), ("long", "a" * 300)]
    ]
)

OUTSIDE = (b"record(", b"root:", b"labrt.sqlite", b"def ")
STATIC_CASES = [
    Case(
        f"static-{name}",
        "GET",
        target,
        status,
        ("invalid path",) if status == 400 else ("not found",),
        auth=None,
        never=OUTSIDE,
    )
    for name, target, status in [
        ("dotdot", "/../recording.py", 400),
        ("dotdot-twice", "/../../helpers.py", 400),
        ("dotdot-encoded", "/%2e%2e/recording.py", 400),
        ("dotdot-upper-encoded", "/%2E%2E%2Frecording.py", 400),
        ("encoded-slash", "/..%2frecording.py", 400),
        ("encoded-backslash", "/..%5crecording.py", 400),
        ("dotdot-after-file", "/index.html/../../recording.py", 400),
        ("absolute-encoded", "/%2Fetc%2Fpasswd", 400),
        ("absolute-double-slash", "//etc/passwd", 400),
        ("absolute-to-lab-module", "/" + quote(str(RECORDING_LAB), safe=""), 400),
        ("etc-passwd", "/etc/passwd", 404),
        ("hidden-file", "/.env", 400),
        ("nul-byte", "/index.html%00.css", 400),
        ("missing-file", "/nope.html", 404),
    ]
]

METHOD_CASES = [
    Case(f"method-{method}-{name}", method, target, 405, ("not allowed",), auth=None, allow=allow)
    for name, method, target, allow in [
        ("api", "PUT", f"{LDL}/api", "GET"),
        ("start", "GET", f"{LDL}/", "POST"),
        ("start-weblab", "PUT", f"{WEBLAB}/", "POST"),
        ("multiple", "GET", f"{WEBLAB}/status/multiple", "POST"),
        ("session", "PATCH", f"{LDL}/{{sid}}", "DELETE"),
        ("status", "POST", f"{LDL}/{{sid}}/status", "GET"),
        ("labrt-status", "POST", "/labrt/status", "GET"),
        ("labrt-logout", "GET", "/labrt/logout", "POST"),
        ("author-route", "GET", "/api/visit", "POST"),
    ]
]

UNKNOWN_CASES = [
    Case(f"unknown-{name}", "GET", target, 404, ("not found",), auth=None)
    for name, target in [
        ("page", "/no/such/page"),
        ("rlms-path", f"{LDL}/{{sid}}/status/extra"),
        ("labrt-path", "/labrt/nope"),
        ("other-dialect", "/rlms/sessions/api"),
    ]
]


CASES = [
    *BODY_CASES,
    *SIZE_CASES,
    *MISSING_CASES,
    *TYPE_CASES,
    *DATE_CASES,
    *LENGTH_CASES,
    *ENDED_CASES,
    *BACK_CASES,
    *HOST_CASES,
    *MULTIPLE_CASES,
    *NUMBER_CASES,
    *DISPOSE_CASES,
    *SID_CASES,
    *AUTH_CASES,
    *COOKIE_CASES,
    *STATIC_CASES,
    *METHOD_CASES,
    *UNKNOWN_CASES,
]


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_bad_input(tmp_path, case: Case):
    async with serve_lab(tmp_path, case.extra) as lab:
        sid = await lab.start("ldl")
        ctx = Ctx(lab, sid, lab.clock.now(), await lab.runtime.store.secret("cookie-secret"))
        await lab.settle()
        before = store_bytes(tmp_path)
        assert before

        headers = case.headers(ctx) if callable(case.headers) else dict(case.headers)
        if case.auth is not None:
            headers["Authorization"] = case.auth
        body = case.body(ctx) if callable(case.body) else case.body
        if body is not None:
            body = body.replace(b"{sid}", sid.encode())
        reply = await send(ctx, case.method, case.target.replace("{sid}", sid), headers, body)

        assert 400 <= reply.status < 500, (reply.status, reply.content)
        assert reply.status == case.status, (reply.status, reply.content)
        assert reply.mimetype == "application/json", (reply.headers, reply.content)
        answer = reply.json()
        message = message_of(answer)
        for fragment in case.says:
            assert fragment.lower() in message.lower(), message
        if case.field is not None:
            assert answer.get("field") == case.field, answer
        if case.realm:
            assert reply.headers["WWW-Authenticate"] == 'Basic realm="Login Required"'
        if case.status == 405:
            assert case.allow in reply.headers["Allow"].split(","), reply.headers
        for secret in case.never:
            assert secret not in reply.content
        if case.check is not None:
            case.check(answer)

        await lab.settle()
        assert store_bytes(tmp_path) == before, "a refused request changed the store"
        assert await lab.call("GET", f"{LDL}/api", auth=None) == (200, {"api_version": "1"})
        assert await lab.should_finish(sid) == 5


# Odd requests the contract (protocol.md) answers with a 200, because real RLMS code reads them:
# they are kept as they are, and they change nothing either.
CONTRACT_ANSWERS = [
    (
        "multiple-without-ids",
        "POST",
        f"{LDL}/status/multiple",
        b'{"timeout": 5}',
        {"success": False, "error_code": "missing-parameters"},
    ),
    (
        "multiple-ids-null",
        "POST",
        f"{WEBLAB}/status/multiple",
        b'{"session_ids": null}',
        {"success": False, "error_code": "missing-parameters"},
    ),
    ("dispose-without-action", "POST", f"{WEBLAB}/{{sid}}", b"{}", {"message": "Unknown op"}),
    (
        "dispose-other-action",
        "POST",
        f"{LDL}/{{sid}}",
        b'{"action": "keep"}',
        {"message": "Unknown op"},
    ),
    ("status-unknown-sid", "GET", f"{LDL}/{'x' * 43}/status", None, {"should_finish": -1}),
    ("delete-unknown-sid", "DELETE", f"{LDL}/{'x' * 43}", None, {"message": "Not found"}),
    (
        "multiple-unknown-ids",
        "POST",
        f"{LDL}/status/multiple",
        b'{"session_ids": ["..", "a/b", "{sid}"]}',
        {"status": {"..": -1, "a/b": -1, "{sid}": 5}},
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "body", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CONTRACT_ANSWERS],
)
async def test_contract_answers_stay_200(tmp_path, method, target, body, expected):
    async with serve_lab(tmp_path) as lab:
        sid = await lab.start("ldl")
        ctx = Ctx(lab, sid, lab.clock.now(), b"")
        await lab.settle()
        before = store_bytes(tmp_path)
        if body is not None:
            body = body.replace(b"{sid}", sid.encode())
        headers: dict[str, str | bytes] = {"Authorization": AUTH["Authorization"]}
        reply = await send(ctx, method, target.replace("{sid}", sid), headers, body)
        assert reply.status == 200, reply.content
        assert reply.mimetype == "application/json"
        answer = reply.json()
        expected = json.loads(json.dumps(expected).replace("{sid}", sid))
        assert {k: answer.get(k) for k in expected} == expected, answer
        await lab.settle()
        assert store_bytes(tmp_path) == before
        assert await lab.should_finish(sid) == 5

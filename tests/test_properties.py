"""Property-based tests of what reads untrusted or hand-written input: the RLMS protocol parsers
(both dialects) and the lab.toml loader.

The RLMS and the open internet send anything; a teacher writes anything in lab.toml. For every
input the answer must be a parsed value or the module's own error (``ProtocolError``, which the
web layer turns into a 400 naming the field; ``ConfigError``, which the CLI turns into one line
and exit status 2), never another exception: that would be a 500, or a traceback instead of
advice. Hypothesis shapes the inputs from valid bodies and files, so most examples get past the
first checks and reach the deep ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers import legacy_body, new_body
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.kinds import KINDS
from drivers.pins import PIN_FACTORIES
from labrt.config import Config, ConfigError, load_config
from labrt.model import Dialect, StartRequest
from labrt.protocol import (
    MAX_SLOT_SECONDS,
    SESSION_ID,
    ProtocolError,
    check_session_id,
    is_delete,
    parse_json,
    parse_start,
    parse_status_multiple,
    start_body,
)

# Modest budgets: these run in every CI on two shared cores, next to everything else.
# LABRT_FUZZ_SCALE=20 makes a long hunt of it on a developer's machine.
SCALE = float(os.environ.get("LABRT_FUZZ_SCALE", "1"))
FAST = settings(
    max_examples=int(300 * SCALE),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SLOW = settings(
    max_examples=int(150 * SCALE),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# -- input strategies -------------------------------------------------------------------------

# Characters that break parsers: URL delimiters, brackets, controls, NUL, non-ASCII.
TRICKY = "[]:/@%?#.-_ \t\n\x00\x7f\\\"'{}$~é中\U0001f600"
tricky_text = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(), max_size=40)
text = st.one_of(
    st.text(max_size=30),
    tricky_text,
    st.sampled_from(["", " ", "http://", "https://", "2026-11-24T10:00:00"]).flatmap(
        lambda prefix: tricky_text.map(lambda rest: prefix + rest)
    ),
)
# URLs urllib refuses to split (ValueError): each was once a 500 or a traceback.
bad_urls = st.sampled_from(["http://[", "https://[::1", "http://a]b/", "http://[zz]/", "http://:x"])
text = text | bad_urls
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e10, 1e300, MAX_SLOT_SECONDS, MAX_SLOT_SECONDS + 1]),
)
dates = st.one_of(
    st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.none() | st.timezones(),
    ).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat().replace("+00:00", "Z")),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text, dates)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """``valid`` with a few values replaced by others or removed: mostly well-formed bodies
    with one or two bad fields, which is what reaches the deep checks."""
    body = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = _paths(body)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        target = body
        for key in parents:
            target = target[key]
        if isinstance(target, dict) and draw(st.booleans()):
            del target[last]
        else:
            target[last] = draw(json_values)
    return body


def start_bodies(dialect: str) -> st.SearchStrategy[Any]:
    build = legacy_body if dialect == "weblab" else new_body
    valid = st.builds(
        build,
        st.floats(min_value=1, max_value=4e9),
        st.floats(min_value=0.001, max_value=MAX_SLOT_SECONDS),
    )
    return st.one_of(json_values, valid, valid.flatmap(mutated))


# -- the protocol -----------------------------------------------------------------------------


def _finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)


@FAST
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_parse_json_gives_a_value_or_a_protocol_error(raw: bytes):
    try:
        value = parse_json(raw)
    except ProtocolError as exc:
        assert exc.field == "body" and exc.status == 400
        return
    assert json.loads(raw) == value or value != value  # NaN never gets through, see below
    assert "NaN" not in raw.decode() or '"' in raw.decode()


@FAST
@given(st.sampled_from(list(Dialect)).flatmap(lambda d: st.tuples(st.just(d), start_bodies(d))))
def test_parse_start_gives_a_start_request_or_a_protocol_error(case: tuple[Dialect, Any]):
    dialect, body = case
    try:
        request = parse_start(dialect, body)
    except ProtocolError as exc:
        assert exc.field and exc.status == 400, exc
        assert str(exc).startswith(exc.field)
        return
    assert isinstance(request, StartRequest) and request.dialect is dialect
    assert _finite(request.start_date) and _finite(request.max_date)
    assert 0 < request.max_date - request.start_date <= MAX_SLOT_SECONDS + 1e-6
    assert request.back.startswith(("http://", "https://"))
    for name in ("username", "username_unique", "full_name", "locale", "back", "experiment_id"):
        value = getattr(request, name)
        if value is not None:
            value.encode("utf-8")  # the store must be able to hold it: no lone surrogate
    assert request.username.strip() and request.username_unique.strip()
    name, category = request.experiment_name, request.category_name
    assert request.experiment_id == (f"{name}@{category}" if category else name)


@st.composite
def one_field_hostile(draw: st.DrawFn, dialect: Dialect) -> Any:
    """A valid body of ``dialect`` with one value (at any depth) replaced by a hostile one."""
    build = legacy_body if dialect is Dialect.LEGACY else new_body
    body = build(draw(st.integers(min_value=1, max_value=4_000_000_000)))
    *parents, last = draw(st.sampled_from(_paths(body)))
    target = body
    for key in parents:
        target = target[key]
    target[last] = draw(st.one_of(bad_urls, text, dates, numbers))
    return body


@FAST
@given(
    st.sampled_from(list(Dialect)).flatmap(lambda d: st.tuples(st.just(d), one_field_hostile(d)))
)
def test_parse_start_of_one_hostile_field_gives_a_request_or_a_protocol_error(
    case: tuple[Dialect, Any],
):
    dialect, body = case
    try:
        parse_start(dialect, body)
    except ProtocolError as exc:
        assert exc.field and exc.status == 400, exc


@FAST
@given(
    st.builds(
        StartRequest,
        dialect=st.sampled_from(list(Dialect)),
        username=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and "\x00" not in s),
        username_unique=st.text(min_size=1, max_size=20).filter(
            lambda s: s.strip() and "\x00" not in s
        ),
        full_name=st.none() | st.text(max_size=20).filter(lambda s: "\x00" not in s),
        locale=st.sampled_from(["en", "es", "de-AT"]),
        back=st.text(string.ascii_letters + string.digits + "/-._", max_size=20).map(
            lambda path: f"https://rlms.example/{path}"
        ),
        experiment_name=st.text(string.ascii_letters, min_size=1, max_size=10),
        category_name=st.none() | st.text(string.ascii_letters, min_size=1, max_size=10),
        experiment_id=st.just(""),
        client_data=json_values,
        server_data=st.dictionaries(st.text(string.ascii_letters, max_size=5), json_values),
        start_date=st.integers(min_value=1, max_value=4_000_000_000).map(float),
        max_date=st.integers(min_value=1, max_value=MAX_SLOT_SECONDS).map(float),
    )
)
def test_what_labrt_fake_sends_parses_back_to_the_same_request(request: StartRequest):
    """``start_body`` (what ``labrt fake`` and the dev page post) and ``parse_start`` agree, in
    both dialects: a round trip keeps every field the lab sees."""
    length = request.max_date
    for dialect in Dialect:
        parsed = parse_start(
            dialect, start_body(dialect, _replace(request, max_date=request.start_date + length))
        )
        assert parsed.dialect is dialect
        assert parsed.start_date == request.start_date
        assert parsed.max_date == request.start_date + length
        for name in ("username", "username_unique", "full_name", "locale", "back"):
            assert getattr(parsed, name) == getattr(request, name), name
        assert (parsed.experiment_name, parsed.category_name) == (
            request.experiment_name,
            request.category_name,
        )
        assert parsed.client_data == request.client_data


def _replace(request: StartRequest, **changes: Any) -> StartRequest:
    fields = {name: getattr(request, name) for name in request.__dataclass_fields__}
    return StartRequest(**{**fields, **changes})


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"session_ids": st.lists(text | json_values, max_size=5)},
            optional={"timeout": scalars},
        ),
    )
)
def test_parse_status_multiple_gives_ids_or_a_protocol_error(body: Any):
    try:
        parsed = parse_status_multiple(body)
    except ProtocolError as exc:
        assert exc.status == 400 and exc.field
        return
    if parsed is None:
        assert isinstance(body, dict) and body.get("session_ids") is None
        return
    ids, timeout = parsed
    assert all(isinstance(sid, str) for sid in ids)
    assert timeout is None or (_finite(timeout) and timeout > 0)


@FAST
@given(json_values | st.fixed_dictionaries({"action": scalars}))
def test_is_delete_gives_a_boolean_or_a_protocol_error(body: Any):
    try:
        answer = is_delete(body)
    except ProtocolError:
        assert not isinstance(body, dict)
        return
    assert answer is (body.get("action") == "delete")


@FAST
@given(text | st.from_regex(SESSION_ID, fullmatch=True))
def test_check_session_id_gives_the_id_or_a_protocol_error(sid: str):
    try:
        assert check_session_id(sid) == sid
    except ProtocolError as exc:
        assert exc.field == "session_id"
        assert not SESSION_ID.fullmatch(sid)


# -- lab.toml -----------------------------------------------------------------------------------


def _known_keys() -> dict[str, tuple[str, ...]]:
    """The keys the loader knows, section by section, as its own "unknown key" error lists
    them: generated files then reach each key's own check rather than stopping at "unknown
    key", and a key added to the loader is fuzzed without touching this file."""
    keys: dict[str, tuple[str, ...]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "lab.toml"
        (path.parent / "lab.py").write_text("", encoding="utf-8")
        for section in ("lab", "server", "rlms", "session", "store", "tasks", "push", "hardware"):
            tables: dict[str, dict[str, Any]] = {
                "lab": {"module": "lab.py"},
                "rlms": {"username": "rlms", "password": "a-real-secret-for-the-tests"},
            }
            tables.setdefault(section, {})["zzz_unknown"] = 1
            path.write_text(render(tables), encoding="utf-8")
            with pytest.raises(ConfigError) as caught:
                load_config(path)
            listed = re.search(r"known keys: ([^)]*)\)", caught.value.message)
            assert listed, caught.value
            keys[section] = tuple(k.strip() for k in listed[1].split(","))
    return keys


DRIVER_OPTIONS = (
    *("pin", "safe", "active_high", "frequency", "pull_up", "active_state", "bounce_time"),
    *("url", "baudrate", "newline", "encoding", "banner", "banner_timeout", "reconnect"),
)
# Never random module names: an author's kind is imported, and some modules do things on import.
DRIVER_KINDS = (*KINDS, "nowhere_such_module:Thing", "drivers:Driver", "drivers.gpio:Output", "")

# A TOML file is UTF-8: it cannot hold a lone surrogate, which the protocol's JSON can.
toml_text = text.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s))
toml_scalars = st.one_of(
    bad_urls,
    st.booleans(),
    numbers.filter(lambda n: not isinstance(n, int) or -(2**63) <= n < 2**63),
    toml_text,
    dates,
    st.sampled_from(
        [
            "lab.py",
            "static",
            "/",
            "//evil.example",
            "$HOME/x",
            "${NO_SUCH_LABRT_VARIABLE}/x",
            "~/x",
            "x" * 300,
            "/" + "x" * 5000,
            "http://[",
            "https://lab.example.org/",
            "loop://",
            "socket://127.0.0.1:1",
            "GPIO17",
            "BOARD11",
            *PIN_FACTORIES,
        ]
    ),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_text, inner, max_size=3),
    max_leaves=6,
)


def toml_value(value: Any) -> str:
    """One value in TOML syntax (strings as basic strings, tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, except that TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def render(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{toml_value(key)} = {toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


KEYS = _known_keys()


@st.composite
def config_files(draw: st.DrawFn) -> str:
    """A lab.toml: a valid one with sections and keys added, changed or dropped; sometimes
    an unknown key or section; sometimes not TOML at all."""
    tables: dict[str, dict[str, Any]] = {
        "lab": {"module": "lab.py"},
        "rlms": {"username": "rlms", "password": "a-real-secret-for-the-tests"},
    }
    for section in draw(st.lists(st.sampled_from(list(KEYS)), max_size=4, unique=True)):
        table = tables.setdefault(section, {})
        for key in draw(st.lists(st.sampled_from(KEYS[section]), max_size=3, unique=True)):
            table[key] = draw(toml_values)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        name = draw(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | toml_text)
        options = {"kind": draw(st.sampled_from(DRIVER_KINDS) | toml_scalars)}
        for key in draw(st.lists(st.sampled_from(DRIVER_OPTIONS), max_size=4, unique=True)):
            options[key] = draw(toml_values)
        tables[f"drivers.{json.dumps(name, ensure_ascii=False)}"] = options
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        tables.setdefault(draw(st.sampled_from(list(KEYS))), {})["zzz_unknown"] = 1
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        drop = draw(st.sampled_from(["lab", "rlms"]))
        if draw(st.booleans()):
            tables.pop(drop)
        else:
            tables[drop].pop(next(iter(tables[drop])))
    file = render(tables)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        file = draw(toml_text) + file  # mostly not TOML any more
    return file


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example: a lab module, a static folder, a password file."""
    directory = tmp_path_factory.mktemp("config")
    (directory / "lab.py").write_text("from labrt import Lab\nlab = Lab()\n", encoding="utf-8")
    (directory / "static").mkdir()
    return directory


@SLOW
@given(file=config_files(), dev=st.booleans())
def test_load_config_gives_a_config_or_a_config_error(lab_dir: Path, file: str, dev: bool):
    path = lab_dir / "lab.toml"
    path.write_text(file, encoding="utf-8")
    try:
        config = load_config(path, dev=dev)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc
        assert exc.message and "\n" not in str(exc), "one line, for the log and the terminal"
        return
    assert isinstance(config, Config)
    assert config.rlms.username.strip()
    assert config.server.base_url == "" or config.server.base_url.startswith("/")
    assert not config.server.callback_url.endswith("/")


@settings(FAST, max_examples=int(1000 * SCALE))  # fast, and 34 keys to cover
@given(
    section=st.sampled_from(list(KEYS)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(KEYS[name]))
    ),
    value=st.one_of(bad_urls, toml_scalars, toml_values),
)
def test_load_config_of_one_hostile_key_gives_a_config_or_a_config_error(
    lab_dir: Path, section: tuple[str, str], value: Any
):
    """A valid file with one known key set to anything: every key's own check is reached."""
    name, key = section
    tables: dict[str, dict[str, Any]] = {
        "lab": {"module": "lab.py"},
        "rlms": {"username": "rlms", "password": "a-real-secret-for-the-tests"},
    }
    tables.setdefault(name, {})[key] = value
    if name == "rlms" and key != "password":
        del tables["rlms"]["password"]  # one password source at a time
    path = lab_dir / "lab.toml"
    path.write_text(render(tables), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.key is None or exc.key.startswith(f"[{name}]"), exc


@SLOW
@given(st.binary(max_size=200))
def test_load_config_of_any_bytes_gives_a_config_error(lab_dir: Path, raw: bytes):
    path = lab_dir / "lab.toml"
    path.write_bytes(raw)
    assume(b"[lab]" not in raw)  # without it, no file is a valid config
    with pytest.raises(ConfigError):
        load_config(path)


# -- what the properties found: each was a traceback instead of one line of advice ----------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "public_url", "http://["),
        ("lab", "initial_url", "https://[::1"),
        ("lab", "unauthorized_link", "http://a]b/"),
        ("store", "path", "x" * 300),
        ("lab", "static", "x" * 300),
        ("lab", "module", "x" * 300 + ".py"),
    ],
)
def test_urls_urllib_refuses_and_names_too_long_are_config_errors(
    lab_dir: Path, section: str, key: str, value: str
):
    tables: dict[str, dict[str, Any]] = {
        "lab": {"module": "lab.py"},
        "rlms": {"username": "rlms", "password": "a-real-secret-for-the-tests"},
    }
    tables.setdefault(section, {})[key] = value
    path = lab_dir / "lab.toml"
    path.write_text(render(tables), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == f"[{section}] {key}"


def test_a_config_error_is_one_line_even_for_a_key_with_a_newline(lab_dir: Path):
    path = lab_dir / "lab.toml"
    tables = {"lab": {"module": "lab.py"}, "rlms": {"username": "r", "password": "a-real-one"}}
    path.write_text(render(tables) + '[drivers."led\\n1"]\nkind = "gpio.output"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    assert "led\\n1" in str(caught.value)

"""Fuzzing the running lab over HTTP from its own OpenAPI document (schemathesis).

A real ``labrt run`` serves a lab that records its hooks; for every operation of
``labrt/static/openapi.json`` schemathesis sends requests that follow the schema and requests
that break it, with and without the RLMS's credentials, a real session's cookie and id or made
up ones, and hostile ``Origin``/``Referer``/``Sec-Fetch-Site`` headers. The server must never
answer 5xx, never make a client wait, and answer what the document says. Then it is stopped as
systemd stops it, and the store must be sound: SQLite's own integrity check passes, every
session ended with a reason, no task is left running, and every session whose on_start ran had
on_dispose exactly once.

Budget: about a minute on two cores (``LABRT_FUZZ_SCALE`` multiplies the examples).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from helpers import AUTH, BODIES, PREFIXES, Spawned, new_body, serve_lab, store_bytes, write_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "labrt" / "static" / "openapi.json"
SCALE = float(os.environ.get("LABRT_FUZZ_SCALE", "1"))
EXAMPLES = int(40 * SCALE)  # per operation and generation mode
TIMEOUT = 10  # seconds: an answer later than this is a hang
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# The lab under fuzz: hooks record themselves, nothing blocks or fails on purpose (unlike
# tests/labs/recording.py, whose client data can make on_start hang for an hour).
LAB = """
import json, os, time
from labrt import Lab, requires_active, user

lab = Lab()

def record(event):
    with open(os.environ["LABRT_TEST_RECORD"], "a") as f:
        f.write(json.dumps({"event": event, "sid": user.session_id}) + "\\n")

@lab.on_start
def start(client_data, server_data):
    record("start")
    return {"client": client_data}

@lab.on_dispose
def dispose():
    record("dispose")

@lab.task()
def work():
    time.sleep(0.05)
    return "done"

@lab.route("POST", "/api/work")
@requires_active
async def start_work(request):
    return {"task_id": (await work.delay()).task_id}
"""
HARDWARE = """
[session]
timeout = 60

[hardware]
pins = "mock"

[drivers.led]
kind = "gpio.output"
pin = 17
"""

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
hostile_headers = st.fixed_dictionaries(
    {},
    optional={
        "Origin": st.one_of(header_text, st.sampled_from(["http://[", "null", "http://evil"])),
        "Referer": st.one_of(header_text, st.sampled_from(["http://[x/", "https://a]b/"])),
        "Accept": st.sampled_from(["text/html", "application/json", "*/*"]),
        "Sec-Fetch-Site": st.sampled_from(["cross-site", "same-site", "same-origin", "none"]),
    },
)


def operations(schema: Any) -> Iterator[Any]:
    """The operations of the document that a ``labrt run`` without ``--dev`` serves."""
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.definition.raw.get("x-labrt-dev-only", False):
            yield operation


class Lab:
    """The spawned lab and what the fuzzer needs of it: a live session and its cookie."""

    def __init__(self, directory: Path) -> None:
        module = directory / "fuzzed_lab.py"
        module.write_text(textwrap.dedent(LAB), encoding="utf-8")
        self.record = directory / "record.jsonl"
        self.store = directory / "labrt.sqlite"
        config = write_config(directory, HARDWARE, module=module)
        self.server = Spawned(config, {"LABRT_TEST_RECORD": str(self.record)})
        self.http = requests.Session()
        self.seen: defaultdict[str, Counter[int]] = defaultdict(Counter)  # label -> statuses

    def fresh_session(self) -> Real:
        """Start a session as the RLMS, open its link as the student, start a task."""
        answer = self.http.post(
            f"{self.server.url}/ldl/sessions/",
            json=new_body(time.time()),
            headers=AUTH,
            timeout=TIMEOUT,
        ).json()
        with requests.Session() as browser:
            visit = browser.get(answer["url"], allow_redirects=False, timeout=TIMEOUT)
            assert visit.status_code == 302, visit.text
            task = browser.post(f"{self.server.url}/api/work", timeout=TIMEOUT)
            assert task.status_code == 200, task.text
            return Real(answer["session_id"], dict(browser.cookies), task.json()["task_id"])


@dataclass
class Real:
    """Values the fuzzer may put in place of generated ones, to reach past "not found"."""

    sid: str
    cookies: dict[str, str]
    task_id: str

    def into(self, case: Any) -> None:
        """Real ids in the path, a slot that is on now, a device that exists."""
        if case.path_parameters:
            for name, value in (("sid", self.sid), ("task_id", self.task_id)):
                if name in case.path_parameters:
                    case.path_parameters[name] = value
        body = case.body
        if not isinstance(body, dict):
            return
        if isinstance(body.get("schedule"), dict):
            body["schedule"]["start"] = dt.datetime.now(dt.UTC).isoformat()
        server = body.get("server_initial_data")
        if isinstance(server, dict):
            server["priority.queue.slot.start.timestamp"] = time.time()
        if "name" in body:
            body["name"] = "led"
        if isinstance(body.get("session_ids"), list):
            body["session_ids"].append(self.sid)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    running = Lab(tmp_path)
    try:
        yield running
    finally:
        running.http.close()
        running.server.stop()


def fuzz(lab: Lab, operation: Any, mode: GenerationMode) -> None:
    """Run one operation's examples of one mode against the lab."""
    real = lab.fresh_session()

    @given(
        case=operation.as_strategy(generation_mode=mode),
        use_real=st.booleans(),
        credentials=st.sampled_from(["rlms", "none", "wrong"]),
        cookie=st.sampled_from(["session", "none", "forged"]),
        headers=hostile_headers,
    )
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, unshrunk
        suppress_health_check=list(HealthCheck),
    )
    def run(
        case: Any, use_real: bool, credentials: str, cookie: str, headers: dict[str, str]
    ) -> None:
        if use_real:
            real.into(case)
        sent = dict(headers)
        if credentials == "rlms":
            sent.update(AUTH)
        elif credentials == "wrong":
            sent["Authorization"] = "Basic cmxtczp3cm9uZw=="  # rlms:wrong
        forged = {"labrt": f"{real.sid}.0.forged"}
        jar = {"session": real.cookies, "none": {}, "forged": forged}[cookie]
        response = case.call(base_url=lab.server.url, headers=sent, cookies=jar, timeout=TIMEOUT)
        lab.seen[operation.label][response.status_code] += 1
        if operation.path == "/labrt/ws" and response.status_code == 101:
            return  # an upgrade the fuzzer cannot speak; push.md's tests cover it
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.slow
def test_fuzz_every_operation_then_the_store_is_sound(lab: Lab):
    schema = schemathesis.openapi.from_dict(json.loads(DOCUMENT.read_text(encoding="utf-8")))
    fuzzed = []
    for operation in operations(schema):
        fuzz(lab, operation, GenerationMode.POSITIVE)
        if any(
            len(inputs) for inputs in (operation.path_parameters, operation.query, operation.body)
        ):
            fuzz(lab, operation, GenerationMode.NEGATIVE)  # something to break
        fuzzed.append(operation.label)
    assert len(fuzzed) >= 30, fuzzed
    table = "\n".join(f"{label}: {dict(codes)}" for label, codes in sorted(lab.seen.items()))
    assert set(lab.seen) == set(fuzzed), table
    answers = sum(lab.seen.values(), Counter())
    passed = sum(n for code, n in answers.items() if code < 400)
    assert passed > answers.total() / 4, f"the fuzzer rarely got past the checks:\n{table}"

    health = lab.http.get(f"{lab.server.url}/healthz", timeout=TIMEOUT)
    assert health.status_code == 200, health.text
    assert lab.server.stop() == 0, lab.server.log.read_text()[-3000:]
    check_store(lab.store, lab.record)


def check_store(store: Path, record: Path) -> None:
    """What must hold of a store after a clean stop, whatever the requests before it."""
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        states = Counter(state for (state,) in db.execute("SELECT state FROM sessions"))
        unended = db.execute(
            "SELECT sid, state, end_reason, ended_at FROM sessions "
            "WHERE state != 'ended' OR end_reason IS NULL OR ended_at IS NULL"
        ).fetchall()
        unfinished = db.execute(
            "SELECT task_id, status FROM tasks WHERE status IN ('submitted', 'running')"
        ).fetchall()
        sids = {sid for (sid,) in db.execute("SELECT sid FROM sessions")}
    assert states["ended"] > 10, states  # the fuzzer did start sessions
    assert unended == [], "sessions a clean stop left unended"
    assert unfinished == [], "tasks a clean stop left running"
    hooks = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    started = Counter(h["sid"] for h in hooks if h["event"] == "start")
    disposed = Counter(h["sid"] for h in hooks if h["event"] == "dispose")
    assert set(started) <= sids
    assert all(n == 1 for n in started.values()), "on_start ran twice for a session"
    assert disposed == started, "every started session had on_dispose exactly once"


# -- what fuzzing found: each was a 500 -------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ldl", "weblab"])
async def test_a_back_url_urllib_cannot_split_is_a_400_naming_the_field(tmp_path, dialect):
    async with serve_lab(tmp_path) as lab:
        body = BODIES[dialect](lab.clock.now())
        field = "request.backUrl" if dialect == "ldl" else "back"
        if dialect == "ldl":
            body["request"]["backUrl"] = "http://["
        else:
            body["back"] = "http://["
        before = store_bytes(tmp_path)
        status, answer = await lab.call("POST", f"{PREFIXES[dialect]}/", json=body)
        assert (status, answer["field"]) == (400, field), answer
        assert store_bytes(tmp_path) == before


@pytest.mark.parametrize("dialect", ["ldl", "weblab"])
async def test_a_lone_surrogate_in_a_name_is_a_400_naming_the_field(tmp_path, dialect):
    """JSON may spell "\\ud800"; SQLite cannot store it as text, so it is refused up front."""
    async with serve_lab(tmp_path) as lab:
        body = BODIES[dialect](lab.clock.now())
        if dialect == "ldl":
            body["user"]["username"], field = "jdoe\ud800", "user.username"
        else:
            body["server_initial_data"]["request.username"] = "jdoe\ud800"
            field = "server_initial_data.request.username"
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \ud800
        status, answer = await lab.call(
            "POST", f"{PREFIXES[dialect]}/", data=raw, headers={"Content-Type": "application/json"}
        )
        assert (status, answer["field"]) == (400, field), answer
        assert lab.runtime.sessions.sessions() == []


@pytest.mark.parametrize(
    ("method", "path", "header"),
    [
        ("POST", "/labrt/logout", "Referer"),
        ("POST", "/callback/{sid}/logout", "Referer"),
        ("GET", "/labrt/ws", "Origin"),
    ],
)
async def test_an_origin_urllib_cannot_split_is_refused_as_cross_site(
    tmp_path, method, path, header
):
    async with serve_lab(tmp_path) as lab:
        sid = await lab.start("ldl")
        async with lab.browser() as browser:
            await lab.visit(browser, sid)
            url = lab.url(path.replace("{sid}", sid))
            async with browser.request(method, url, headers={header: "http://[x/"}) as r:
                assert r.status == 403, await r.text()
                assert "cross-site" in (await r.json())["message"].lower()
        assert await lab.should_finish(sid) == 5, "the student is still in"

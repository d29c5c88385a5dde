"""labrt behind the real LabDiscoveryEngine 0.6.0, in both dialects.

LDE books students and hands them to a spawned ``labrt run`` exactly as it would in
production: one resource speaks the new dialect (``/ldl``), one the legacy one (``/weblab``).
Needs Debian's ``redis-server`` (``.ci/run`` installs it) and PyPI for LDE's own venv.
"""

from __future__ import annotations

import http.cookiejar
import json
import sqlite3
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import PASSWORD, USERNAME, Spawned, write_config
from lde import LDE

pytestmark = pytest.mark.slow

SLOT = 6  # seconds: long enough for a few status polls, short enough for CI
RESOURCES = {"ldl": "lab-ldl", "weblab": "lab-weblab"}
LABORATORIES = {"ldl": "blink", "weblab": "blink-legacy"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A labrt lab and an LDE that books students into it, both on loopback."""
    workdir = tmp_path_factory.mktemp("lde")
    record = workdir / "record.jsonl"
    lab = Spawned(write_config(workdir), {"LABRT_TEST_RECORD": str(record)})
    try:
        resources = {
            RESOURCES["ldl"]: (lab.url, USERNAME, PASSWORD, "labdiscoverylib"),
            RESOURCES["weblab"]: (lab.url, USERNAME, PASSWORD, "weblablib"),
        }
        laboratories = {LABORATORIES[d]: [RESOURCES[d]] for d in RESOURCES}
        with LDE(workdir / "lde-run", resources, laboratories) as lde:
            yield lab, lde, workdir
    finally:
        assert lab.stop() == 0


def stored(workdir, sid):
    db = sqlite3.connect(f"file:{workdir / 'labrt.sqlite'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM sessions WHERE sid = ?", (sid,)).fetchone())
    finally:
        db.close()


def dispose_count(workdir, sid):
    lines = (workdir / "record.jsonl").read_text().splitlines()
    return sum(1 for e in map(json.loads, lines) if e == {"event": "dispose", "sid": sid})


def student_browser():
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def get_json(browser, url):
    with browser.open(url, timeout=30) as answer:
        return json.loads(answer.read())


def a_student_in_a_slot(lab, lde, dialect, user):
    """Book, follow LDE's link as the student, work until LDE frees the lab at slot end."""
    rid = lde.reserve(LABORATORIES[dialect], user, SLOT)
    ready = lde.wait_for(rid, "ready")
    sid = ready["external_session_id"]
    assert ready["url"] == f"{lab.url}/callback/{sid}"

    browser = student_browser()
    with browser.open(ready["url"], timeout=30) as page:  # callback → cookie → the lab's page
        assert page.status == 200 and "hello from the test lab" in page.read().decode()
    me = get_json(browser, f"{lab.url}/api/whoami")
    assert (me["username"], me["active"]) == (user, True)
    polls = 0
    while get_json(browser, f"{lab.url}/labrt/status")["state"] == "active":
        polls += 1
        time.sleep(0.5)
    assert polls >= 5  # the student had the lab for the slot

    lde.wait_for(rid, "finished", timeout=SLOT + 15)
    freed = time.time()
    assert lde.assigned(RESOURCES[dialect]) is None
    page = get_json(browser, f"{lab.url}/labrt/status")
    assert (page["state"], page["back"]) == ("expired", "http://127.0.0.1:9/back")
    return sid, freed


def test_lde_books_students_over_both_prefixes(deployment):
    lab, lde, workdir = deployment
    with ThreadPoolExecutor(2) as pool:
        results = dict(
            zip(
                RESOURCES,
                pool.map(a_student_in_a_slot, [lab] * 2, [lde] * 2, RESOURCES, ["jdoe", "asmith"]),
                strict=True,
            )
        )
    for dialect, (sid, freed) in results.items():
        session = stored(workdir, sid)
        assert session["dialect"] == dialect
        assert (session["state"], session["end_reason"]) == ("ended", "expired")
        assert session["locale"] == "es"
        assert session["username_unique"].endswith("@tester")
        assert session["max_date"] - session["start_date"] == pytest.approx(SLOT)
        # LDE freed the lab promptly after the slot's end, never before it.
        assert session["max_date"] - 0.05 <= freed <= session["max_date"] + 1.5, (
            dialect,
            freed - session["max_date"],
        )
        assert dispose_count(workdir, sid) == 1


@pytest.mark.parametrize("dialect", list(RESOURCES))
def test_cancelling_a_reservation_disposes_at_once(deployment, dialect):
    _, lde, workdir = deployment
    rid = lde.reserve(LABORATORIES[dialect], "early.leaver", 120)
    sid = lde.wait_for(rid, "ready")["external_session_id"]
    began = time.monotonic()
    assert lde.cancel(rid)["success"] is True
    lde.wait_for(rid, "finished")
    assert time.monotonic() - began < 1.5
    assert lde.assigned(RESOURCES[dialect]) is None
    session = stored(workdir, sid)
    assert (session["state"], session["end_reason"]) == ("ended", "disposed-by-rlms")
    assert dispose_count(workdir, sid) == 1

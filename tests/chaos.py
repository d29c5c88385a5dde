"""Crash loop: drive a real ``labrt run``, ``kill -9`` it at a random moment, restart, and check
after every round that the crash lost nothing and did nothing twice.

    python bench/chaos.py [--kills 500] [--seed N] [--keep DIR]   # the long run

Each round starts ``labrt run`` (tests/labs/chaos_lab.py, a recorded mock LED), lets the RLMS
resume (it polls every session it knows and disposes those that say -1), and drives students
through the protocol in both dialects: start, the callback link, polls, the LED, tasks that run
a while, WebSocket pings answered by pushes, and an end by the RLMS, by logging out, or by
walking away (the slot or the poll timeout ends it). At a random moment, the process gets
``kill -9``; some rounds kill it while it is still starting up (recovering the previous crash).

The lab records every hook call, task run and device reset in a file outside the store,
fsynced before the call goes on; the checks compare that file with the SQLite record:

- every ended session had ``on_dispose`` exactly once. A second call is allowed only for a
  kill that landed while that session's ``on_dispose`` had begun and its completion
  (``dispose_hook_done``) was not yet committed: the process cannot know whether a hook it
  never saw return did its work, so it runs it again (at least once, never zero times);
- no task is left ``submitted`` or ``running`` by a dead process: after a restart every such
  task is failed with the code ``interrupted``, and no task ever runs twice;
- the hardware is in its safe state when nobody is in the lab: made safe by every start (the
  first start after a crash included), and the LED is off whenever no session is live;
- the store passes ``PRAGMA integrity_check`` as the kill left it (a copy is checked, so the
  next start sees exactly what the crash left), and after recovery no session is left
  starting or disposing;
- no student is admitted while a dispose is unfinished: in the store's event log (committed
  in order), no session's ``starting`` comes between another's ``disposing`` and ``ended``.

Timing is not reproducible, so the seed reproduces the choices (slot lengths, actions, kill
delays), not the interleavings. tests/test_chaos.py runs the same rounds, fewer of them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from helpers import AUTH, BODIES, LABS, PREFIXES, Spawned, write_config

LAB = LABS / "chaos_lab.py"
SETTINGS = """
[session]
timeout = 3
poll_interval = 1
dispose_timeout = 5

[tasks]
threads = 2

[hardware]
pins = "mock"

[drivers.led]
kind = "kinds:Recorded"
pin = 17
"""
JSON = {"Accept": "application/json"}
LIVE = ("starting", "active", "disposing")
# Generous bounds on answers that must come; a round is normally killed long before.
ANSWER_WITHIN = 20.0


class Starting(Spawned):
    """A ``labrt run`` not waited for: to kill it during start-up, recovery included."""

    def _wait_listening(self, timeout: float = 30) -> str:
        return ""


@dataclass
class Stats:
    kills: int = 0
    kills_at_start_up: int = 0
    checks: int = 0
    sessions: int = 0
    tasks: int = 0
    pongs: int = 0
    rlms_disposes: int = 0
    logouts: int = 0
    dispose_reruns: int = 0
    interrupted_tasks: int = 0
    end_reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class Ledger:
    """The lab's record file, read as it grows (only whole lines: a kill may cut one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines: list[dict[str, Any]] = []
        self.begins: collections.Counter[str] = collections.Counter()
        self.ends: collections.Counter[str] = collections.Counter()
        self.task_runs: collections.Counter[str] = collections.Counter()
        self.torn = 0

    def update(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        for raw in whole.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                self.torn += 1  # a line cut by a kill, then continued by the next process
                continue
            self.lines.append(line)
            event = line["event"]
            if event == "dispose":
                self.begins[line["sid"]] += 1
            elif event == "dispose-end":
                self.ends[line["sid"]] += 1
            elif event == "task-start":
                self.task_runs[line["task"]] += 1


@dataclass
class Snapshot:
    """The store as one process left it."""

    sessions: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    events: list[tuple[int, str | None, str]]
    integrity: str


def read_store(path: Path, events_after: int = 0) -> Snapshot:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (integrity,) = db.execute("PRAGMA integrity_check").fetchone()
        sessions = {
            sid: {"state": state, "end_reason": reason, "hook_done": bool(done), "dialect": dialect}
            for sid, state, reason, done, dialect in db.execute(
                "SELECT sid, state, end_reason, dispose_hook_done, dialect FROM sessions"
            )
        }
        tasks = {
            task_id: {"status": status, "error": json.loads(error) if error else None}
            for task_id, status, error in db.execute("SELECT task_id, status, error FROM tasks")
        }
        events = db.execute(
            "SELECT id, session_id, kind FROM events WHERE id > ? ORDER BY id", (events_after,)
        ).fetchall()
    finally:
        db.close()
    return Snapshot(sessions, tasks, events, integrity)


def crash_image(directory: Path, scratch: Path) -> Snapshot:
    """Read a copy of the store files exactly as the kill left them (opening the original
    would recover its WAL, and the next start would not see what the crash left)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    if not (directory / "labrt.sqlite").exists():
        # Killed in its first start-up before the store was made: nothing was acknowledged.
        return Snapshot({}, {}, [], "ok")
    for suffix in ("", "-wal"):
        source = directory / f"labrt.sqlite{suffix}"
        if source.exists():
            shutil.copyfile(source, scratch / f"labrt.sqlite{suffix}")
    return read_store(scratch / "labrt.sqlite")


class Chaos:
    """The crash loop's state across rounds: what the RLMS knows, and what may happen twice."""

    def __init__(
        self, workdir: Path, seed: int, log: Any = print, *, settings: str = SETTINGS
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.seed = seed
        self.say = log
        self.config = write_config(workdir, settings, module=LAB)
        self.record = workdir / "record.jsonl"
        self.env = {"LABRT_TEST_RECORD": str(self.record), "PYTHONPATH": str(LABS)}
        self.ledger = Ledger(self.record)
        self.stats = Stats()
        self.violations: list[str] = []
        self.dialects: dict[str, str] = {}  # every session the RLMS started
        self.finished: set[str] = set()  # the RLMS was told -1 or "Deleted"
        self.allowed: collections.Counter[str] = collections.Counter()  # on_dispose calls
        self.cut_at: collections.Counter[str] = collections.Counter()  # calls at the last cut
        self.cut_tasks: set[str] = set()  # unfinished when a process died
        self.tasks_seen: set[str] = set()
        self.half_done: set[str] = set()  # starting or disposing when a process died
        self.events_seen = 0
        self.disposing: set[str] = set()  # disposing, not yet ended, in the event log
        self.lines_at_kill = 0

    # -- checks ------------------------------------------------------------------------------

    def check(self, ok: bool, message: str) -> None:
        self.stats.checks += 1
        if not ok:
            self.violations.append(message)
            self.say(f"VIOLATION: {message}")

    def check_dispose_counts(self, snapshot: Snapshot) -> None:
        """Exactly once per ended session; once more only for each kill inside it."""
        ledger = self.ledger
        for sid, row in snapshot.sessions.items():
            calls, allowed = ledger.begins[sid], 1 + self.allowed[sid]
            if row["state"] == "ended":
                self.check(
                    1 <= calls <= allowed,
                    f"session {sid[:8]} ended ({row['end_reason']}) after {calls} on_dispose "
                    f"call(s); {allowed} allowed",
                )
            else:
                self.check(calls <= allowed, f"session {sid[:8]}: {calls} calls, not ended")
            if row["hook_done"]:
                self.check(
                    ledger.ends[sid] >= 1,
                    f"session {sid[:8]}: dispose_hook_done without on_dispose returning",
                )
        for sid in ledger.begins:
            self.check(sid in snapshot.sessions, f"on_dispose for {sid[:8]}, unknown to the store")
            if sid in snapshot.sessions:
                self.check(
                    snapshot.sessions[sid]["state"] in ("disposing", "ended"),
                    f"on_dispose of {sid[:8]} ran before 'disposing' was committed",
                )
        for task_id, runs in ledger.task_runs.items():
            self.check(runs == 1, f"task {task_id[:8]} ran {runs} times")
        for task_id in set(ledger.task_runs) - self.tasks_seen:
            # Checked once: finished tasks are deleted after [tasks] keep_results.
            self.check(task_id in snapshot.tasks, f"task {task_id[:8]} ran, unknown to the store")
            self.tasks_seen.add(task_id)

    def check_admissions(self, snapshot: Snapshot) -> None:
        """No ``starting`` while another session's dispose is between its two ends."""
        for event_id, sid, kind in snapshot.events:
            self.events_seen = event_id
            if kind == "disposing":
                self.disposing.add(sid or "")
            elif kind == "ended":
                self.disposing.discard(sid or "")
            elif kind == "starting":
                self.check(
                    not self.disposing,
                    f"session {(sid or '')[:8]} admitted while the dispose of "
                    f"{sorted(s[:8] for s in self.disposing)} was unfinished",
                )

    def after_kill(self) -> None:
        """What the dead process left: a sound file, and which calls it cut."""
        self.ledger.update()
        self.lines_at_kill = len(self.ledger.lines)
        image = crash_image(self.workdir, self.workdir / "crash-image")
        self.check(image.integrity == "ok", f"integrity_check after a kill: {image.integrity}")
        for sid, row in image.sessions.items():
            calls = self.ledger.begins[sid]
            if calls > self.cut_at[sid] and not row["hook_done"]:
                # Killed inside its latest on_dispose call (or before that call's end was
                # committed): it may run once more. Counted once per call, not per kill.
                self.allowed[sid] += 1
                self.cut_at[sid] = calls
        self.half_done = {
            sid for sid, row in image.sessions.items() if row["state"] in ("starting", "disposing")
        }
        self.cut_tasks |= {
            task_id
            for task_id, row in image.tasks.items()
            if row["status"] in ("submitted", "running")
        }
        self.check_dispose_counts(image)

    def after_start(self, snapshot: Snapshot) -> None:
        """Recovery ran before the server listened: nothing half done is left. (The dispose
        counts are checked once a process is dead: while it runs, the record file and the
        store cannot be read at one instant.)"""
        self.check(snapshot.integrity == "ok", f"integrity_check: {snapshot.integrity}")
        for sid, row in snapshot.sessions.items():
            # A slot may run out during start-up and its dispose begin (by its timer, as
            # any expiry): only what the crash left half done must be finished.
            if sid in self.half_done or row["state"] == "starting":
                self.check(
                    row["state"] == "ended",
                    f"session {sid[:8]} still {row['state']} after recovery",
                )
        self.half_done.clear()
        for task_id, row in snapshot.tasks.items():
            self.check(
                row["status"] not in ("submitted", "running"),
                f"task {task_id[:8]} {row['status']} with no process to run it",
            )
        for task_id in self.cut_tasks:
            row = snapshot.tasks.get(task_id)
            if row is not None:  # a finished task may have been pruned since
                code = (row["error"] or {}).get("code")
                self.check(
                    row["status"] == "failed" and code == "interrupted",
                    f"task {task_id[:8]} cut by a kill is {row['status']}/{code}",
                )
        self.stats.interrupted_tasks += len(self.cut_tasks)
        self.cut_tasks.clear()
        new_safe = [
            line for line in self.ledger.lines[self.lines_at_kill :] if line["event"] == "safe"
        ]
        self.check(
            bool(new_safe) and new_safe[0]["value"] == 0,
            f"the first start after a crash did not make the LED safe: {new_safe[:1]}",
        )
        self.check_admissions(snapshot)

    async def check_led_off(self, http: aiohttp.ClientSession, url: str, why: str) -> None:
        async with http.get(f"{url}/labrt/hardware") as r:
            devices = (await r.json())["devices"]
        value = devices["led"]["state"]["value"]
        self.check(value == 0, f"LED is {value} with nobody in the lab ({why})")

    # -- the RLMS and the students -----------------------------------------------------------

    async def rlms(self, http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
        async with http.request(method, url, headers=AUTH, **kw) as r:
            text = await r.text()
        self.check(r.status < 500, f"{method} {url.split('/', 3)[-1]}: HTTP {r.status} {text}")
        try:
            return json.loads(text)
        except ValueError:
            self.check(False, f"{method} {url.split('/', 3)[-1]}: not JSON: {text[:200]}")
            return {}

    async def dispose(self, http: aiohttp.ClientSession, url: str, sid: str) -> None:
        prefix = PREFIXES[self.dialects[sid]]
        if self.dialects[sid] == "ldl" and self.rng.random() < 0.5:
            answer = await self.rlms(http, "DELETE", f"{url}{prefix}/{sid}")
        else:
            body = {"action": "delete"}
            answer = await self.rlms(http, "POST", f"{url}{prefix}/{sid}", json=body)
        self.check(answer == {"message": "Deleted"}, f"dispose of {sid[:8]} answered {answer}")
        self.finished.add(sid)
        self.stats.rlms_disposes += 1

    async def poll(self, http: aiohttp.ClientSession, url: str, sid: str) -> None:
        """One LDE-style status poll; a -1 is followed by a dispose, as LDE does."""
        prefix = PREFIXES[self.dialects[sid]]
        answer = await self.rlms(http, "GET", f"{url}{prefix}/{sid}/status")
        finish = answer.get("should_finish")
        self.check(isinstance(finish, int) and finish != 0, f"status of {sid[:8]}: {answer}")
        if finish == -1:
            await self.dispose(http, url, sid)

    async def rlms_loop(self, http: aiohttp.ClientSession, url: str) -> None:
        while True:
            for sid in [s for s in self.dialects if s not in self.finished]:
                await self.poll(http, url, sid)
            await asyncio.sleep(0.3)

    async def student(self, url: str, rng: random.Random) -> None:
        """One student after another through the lab, until the kill."""
        while True:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await self.one_slot(http, url, rng)
            await asyncio.sleep(rng.choice((0, 0.05, 0.3)))

    async def one_slot(self, http: aiohttp.ClientSession, url: str, rng: random.Random) -> None:
        dialect = rng.choice(("weblab", "ldl"))
        length = rng.choice((1.5, 4, 10, 30))
        client = {"start_ms": rng.choice((0, 0, 50, 200)), "dispose_ms": rng.choice((0, 50, 300))}
        body = BODIES[dialect](time.time(), length, **client)
        answer = await self.rlms(http, "POST", f"{url}{PREFIXES[dialect]}/", json=body)
        self.check("session_id" in answer, f"start refused: {answer}")
        if "session_id" not in answer:
            return
        sid = answer["session_id"]
        self.dialects[sid] = dialect
        self.stats.sessions += 1
        async with http.get(answer["url"], allow_redirects=False) as r:
            self.check(r.status == 302, f"callback of {sid[:8]}: HTTP {r.status}")
        async with http.ws_connect(f"{url}/labrt/ws") as ws:
            for _ in range(rng.randint(1, 8)):
                await self.act(http, ws, url, sid, rng)
                await asyncio.sleep(rng.choice((0, 0.02, 0.2)))
        ending = rng.choice(("rlms", "rlms", "logout", "walk away"))
        if ending == "rlms":
            await self.dispose(http, url, sid)
        elif ending == "logout":
            async with http.post(f"{url}/labrt/logout") as r:
                self.check(r.status == 200, f"logout of {sid[:8]}: HTTP {r.status}")
            self.stats.logouts += 1

    async def act(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        url: str,
        sid: str,
        rng: random.Random,
    ) -> None:
        action = rng.choice(("poll", "status", "led", "task", "ping", "ping"))
        if action == "poll":
            await self.poll(http, url, sid)
        elif action == "status":
            async with http.get(f"{url}/labrt/status") as r:
                self.check(r.status == 200, f"/labrt/status of {sid[:8]}: HTTP {r.status}")
        elif action in ("led", "task"):
            path = "/led/on" if action == "led" else f"/work?seconds={rng.choice((0.05, 0.5, 3))}"
            async with http.post(f"{url}{path}", headers=JSON, allow_redirects=False) as r:
                status, answer = r.status, await r.text()
            if status == 200 and action == "task":
                self.stats.tasks += 1
            elif status != 200:
                await self.expect_over(http, url, sid, f"{path}: HTTP {status} {answer}")
        elif not ws.closed and not await self.ping(ws, sid):
            await self.expect_over(http, url, sid, "the page's socket closed without 'ended'")

    async def ping(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> bool:
        """Send a message the lab answers with a push; True when the answer (or the news
        that the session ended) arrived."""
        try:
            await ws.send_json({"event": "ping", "data": sid})
            async with asyncio.timeout(ANSWER_WITHIN):
                async for frame in ws:
                    if frame.type is not aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(frame.data)["event"]
                    if event == "pong":
                        self.stats.pongs += 1
                        return True
                    if event == "ended":
                        await ws.close()
                        return True
        except (ConnectionError, aiohttp.ClientConnectionError):
            pass  # the lab closed the page: right only if its session is over
        return False

    async def expect_over(self, http: aiohttp.ClientSession, url: str, sid: str, why: str) -> None:
        """A refusal is right only for a session that is no longer active."""
        async with http.get(f"{url}/labrt/status") as r:
            state = (await r.json()).get("state")
        self.check(state != "active", f"session {sid[:8]} active, yet {why}")

    # -- rounds ------------------------------------------------------------------------------

    def started(self) -> None:
        """Check what the start that just listened recovered."""
        self.ledger.update()  # the safe() of the start is in it: it came before listening
        self.after_start(read_store(self.workdir / "labrt.sqlite", self.events_seen))

    async def resume(self, http: aiohttp.ClientSession, url: str) -> None:
        """The RLMS after a restart: it polls what it knows; sometimes it clears the lab."""
        await self.check_led_off(http, url, "just started")
        for sid in [s for s in self.dialects if s not in self.finished]:
            await self.poll(http, url, sid)
        if self.rng.random() < 0.3:
            # Also the sessions whose start answer a kill cut off: the RLMS never had their
            # ids, so they would stay until their first-visit grace ran out.
            rows = read_store(self.workdir / "labrt.sqlite").sessions
            for sid, row in rows.items():
                self.dialects.setdefault(sid, row["dialect"])
            live = [sid for sid, row in rows.items() if row["state"] in LIVE]
            await asyncio.gather(*(self.dispose(http, url, sid) for sid in live))
            snapshot = read_store(self.workdir / "labrt.sqlite")
            nobody = not any(row["state"] in LIVE for row in snapshot.sessions.values())
            self.check(nobody, "sessions still live after the RLMS disposed them all")
            if nobody:
                await self.check_led_off(http, url, "every session disposed")

    async def one_round(self) -> None:
        at_start_up = self.rng.random() < 0.15
        kind = Starting if at_start_up else Spawned
        server = await asyncio.to_thread(kind, self.config, self.env)
        try:
            if at_start_up:
                # Killed during start-up: perhaps in the middle of recovering the last crash.
                await asyncio.sleep(self.rng.uniform(0.1, 1.5))
                self.stats.kills_at_start_up += 1
            else:
                self.started()
                await self.drive(server)
        finally:
            server.kill()  # kill -9 (again, if drive did), also when a check above failed
        self.stats.kills += 1
        self.after_kill()
        if not self.violations:
            server.log.unlink()

    async def drive(self, server: Spawned) -> None:
        """Students and the RLMS use the lab until the kill, at a random moment."""
        students: list[asyncio.Future[None]] = []
        try:
            async with aiohttp.ClientSession() as http:
                await self.resume(http, server.url)
                seeds = [self.rng.random() for _ in range(self.rng.randint(1, 3))]
                students = [
                    asyncio.ensure_future(self.student(server.url, random.Random(s))) for s in seeds
                ]
                students.append(asyncio.ensure_future(self.rlms_loop(http, server.url)))
                done, _ = await asyncio.wait(students, timeout=self.rng.uniform(0.05, 3.0))
                for failed in done:  # a student stops only by failing
                    self.check(False, f"a client failed: {failed.exception()!r}")
                server.process.kill()  # kill -9: no await between it and the cancels
                for task in students:
                    task.cancel()
                await asyncio.gather(*students, return_exceptions=True)
        finally:
            for task in students:
                task.cancel()

    async def finish(self) -> None:
        """A last start, then a stop as systemd does it: every session ends properly."""
        server = await asyncio.to_thread(Spawned, self.config, self.env)
        try:
            self.started()
            async with aiohttp.ClientSession() as http:
                await self.resume(http, server.url)
        finally:
            status = await asyncio.to_thread(server.stop)
        self.check(status == 0, f"labrt run exited with {status} on SIGTERM")
        self.ledger.update()
        final = read_store(self.workdir / "labrt.sqlite", self.events_seen)
        self.check(final.integrity == "ok", f"integrity_check at the end: {final.integrity}")
        for sid, row in final.sessions.items():
            self.check(row["state"] == "ended", f"session {sid[:8]} {row['state']} after a stop")
            self.stats.end_reasons[row["end_reason"]] += 1
        self.check_dispose_counts(final)
        self.check_admissions(final)
        self.stats.dispose_reruns = sum(
            self.ledger.begins[s] - 1 for s in final.sessions if self.ledger.begins[s] > 1
        )
        safe = [line for line in self.ledger.lines if line["event"] == "safe"]
        self.check(safe[-1]["value"] == 0, f"the LED after the stop: {safe[-1]}")
        if not self.violations:
            server.log.unlink()

    async def run(self, kills: int, *, stop_at_first: bool = True) -> Stats:
        for n in range(kills):
            await self.one_round()
            if self.violations and stop_at_first:
                self.say(f"stopped after round {n + 1}: see {self.workdir}")
                return self.stats
            if (n + 1) % 50 == 0:
                self.say(f"{n + 1} kills, {self.stats.checks} checks passed")
        await self.finish()
        return self.stats


def run_chaos(workdir: Path, kills: int, seed: int, log: Any = print) -> Chaos:
    """Run ``kills`` rounds in ``workdir`` and the final stop; the Chaos holds the results."""
    chaos = Chaos(workdir, seed, log)
    asyncio.run(chaos.run(kills))
    return chaos


def summary(chaos: Chaos, seconds: float) -> str:
    s = chaos.stats
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.end_reasons.items()))
    return "\n".join(
        [
            f"seed {chaos.seed}: {s.kills} kills ({s.kills_at_start_up} during start-up) "
            f"in {seconds:.0f} s",
            f"invariant checks: {s.checks} run, {len(chaos.violations)} violated",
            f"sessions started {s.sessions}; ended: {reasons}",
            f"RLMS disposes {s.rlms_disposes}, logouts {s.logouts}, tasks {s.tasks} "
            f"({s.interrupted_tasks} cut by kills), pushes answered {s.pongs}",
            f"on_dispose re-run after a kill inside it: {s.dispose_reruns}; "
            f"record lines torn by kills: {chaos.ledger.torn}",
        ]
    )

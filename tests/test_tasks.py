"""Tasks: long jobs that run while the lab keeps answering, durable and stoppable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest
from aiohttp import web
from helpers import serve_lab

from labrt import AlreadyRunning, Lab, current_task, logout, requires_active, user


class Gates:
    """Events the test opens to let a blocked task go on (threading: thread tasks wait too)."""

    def __init__(self) -> None:
        self._gates: dict[str, threading.Event] = {}
        self._all_open = False
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> threading.Event:
        with self._lock:
            gate = self._gates.setdefault(name, threading.Event())
            if self._all_open:
                gate.set()
            return gate

    def open_all(self) -> None:
        """Open every gate, including those a task has not asked for yet."""
        with self._lock:
            self._all_open = True
            for gate in self._gates.values():
                gate.set()


def task_lab(gates: Gates, started: list[str] | None = None) -> Lab:
    lab = Lab()
    started = started if started is not None else []

    @lab.task
    async def add(a, b):
        return a + b

    @lab.task()
    def multiply(a, b):
        return a * b

    @lab.task
    def boom():
        raise ValueError("bad firmware")

    @lab.task
    async def not_json():
        return {1, 2}

    @lab.task
    def progress(steps):
        for step in range(1, steps + 1):
            current_task.data["step"] = step
            current_task.store()
            gates[f"step-{step}"].wait(10)
        return "programmed"

    @lab.task
    def wait_for(gate):
        started.append(gate)
        gates[gate].wait(30)
        return gate

    @lab.task
    async def wait_async(gate):
        while not gates[gate].is_set():
            await asyncio.sleep(0.005)
        return gate

    @lab.task(unique="global")
    async def program_board(gate):
        while not gates[gate].is_set():
            await asyncio.sleep(0.005)
        return "flashed"

    @lab.task(unique="user")
    def compile_code(gate):
        gates[gate].wait(30)
        return "compiled"

    @lab.task
    def polite(gate):
        """Stops when asked to, after tidying up (which takes until its gate opens)."""
        while not current_task.stopping:
            gates["never"].wait(0.01)
        gates[gate].wait(30)
        return "stopped early"

    @lab.task
    def stubborn(gate):
        """Ignores stop requests (a blocking call into a driver, say)."""
        gates[gate].wait(30)
        return "finally"

    @lab.task
    async def stubborn_async():
        while True:
            await asyncio.sleep(0.01)

    @lab.task
    def quiet_progress(gate):
        current_task.data["step"] = 1  # not stored yet: nobody else sees it
        gates[gate].wait(30)
        current_task.store()
        gates[gate + "-end"].wait(30)
        current_task.data["odd"] = {1, 2}  # not JSON: the last store() stands
        return "ok"

    @lab.task
    async def leave():
        await logout()
        while not current_task.stopping:
            await asyncio.sleep(0.005)
        return "left"

    @lab.task
    def note_in_user_data():
        user.data["noted"] = True
        return "noted"

    @lab.route("POST", "/stop/{task_id}")
    @requires_active
    async def stop(request):
        lab.get_task(request.match_info["task_id"]).stop()
        return {}

    @lab.route("POST", "/submit/{name}")
    @requires_active
    async def submit(request):
        body = await request.json()
        task = await lab.task_functions[request.match_info["name"]].delay(*body.get("args", []))
        return task.as_dict()

    @lab.route("POST", "/run_sync/{name}")
    @requires_active
    async def run_sync(request):
        body = await request.json()
        fn = lab.task_functions[request.match_info["name"]]
        task = await fn.run_sync(*body.get("args", []), timeout=body.get("timeout"))
        return task.as_dict()

    @lab.route("POST", "/join/{task_id}")
    @requires_active
    async def join(request):
        body = await request.json()
        task = lab.get_task(request.match_info["task_id"])
        if task is None:
            return web.json_response({"error": "not yours"}, status=404)
        try:
            await task.join(body.get("timeout"), error_on_timeout=body.get("strict", False))
        except TimeoutError:
            return {"timed_out": True, "status": task.status}
        return {"timed_out": False, "status": task.status, "result": task.result}

    @lab.route("POST", "/inline")
    @requires_active
    async def inline(request):
        try:
            flashed = await program_board("inline")
        except AlreadyRunning as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return {"sum": await add(1, 2), "product": multiply(3, 4), "flashed": flashed}

    @lab.route("GET", "/mine")
    @requires_active
    async def mine(request):
        return {
            "tasks": [t.task_id for t in lab.tasks],
            "running": [t.task_id for t in lab.running_tasks],
            "user": user.username,
        }

    return lab


@pytest.fixture
def gates():
    gates = Gates()
    yield gates
    gates.open_all()  # no thread is left blocked after a test


async def student(lab):
    """A session, and a browser that holds its cookie."""
    sid = await lab.start()
    browser = lab.browser()
    await lab.visit(browser, sid)
    return sid, browser


async def post(browser, lab, path, body=None):
    async with browser.post(lab.url(path), json=body or {}) as r:
        return r.status, await r.json()


async def task_state(browser, lab, task_id):
    async with browser.get(lab.url(f"/labrt/tasks/{task_id}")) as r:
        return r.status, await r.json()


async def wait_status(browser, lab, task_id, wanted, timeout=10):
    async with asyncio.timeout(timeout):
        while True:
            status, state = await task_state(browser, lab, task_id)
            assert status == 200, state
            if state["status"] in wanted:
                return state
            await asyncio.sleep(0.01)


async def test_results_errors_and_data(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser:
            for name, args, result in (("add", [2, 3], 5), ("multiply", [4, 5], 20)):
                _, submitted = await post(browser, lab, f"/submit/{name}", {"args": args})
                assert submitted["status"] in ("submitted", "running")
                state = await wait_status(browser, lab, submitted["task_id"], {"done"})
                assert state["result"] == result and state["error"] is None

            _, failed = await post(browser, lab, "/run_sync/boom")
            assert failed["status"] == "failed"
            assert failed["error"] == {
                "code": "exception",
                "class": "ValueError",
                "message": "bad firmware",
            }

            _, odd = await post(browser, lab, "/run_sync/not_json")
            assert odd["status"] == "failed" and odd["error"]["code"] == "result-not-json"

            # Progress is visible from outside while the task runs.
            _, job = await post(browser, lab, "/submit/progress", {"args": [2]})
            async with asyncio.timeout(10):
                while (await task_state(browser, lab, job["task_id"]))[1]["data"] != {"step": 1}:
                    await asyncio.sleep(0.01)
            gates["step-1"].set()
            gates["step-2"].set()
            state = await wait_status(browser, lab, job["task_id"], {"done"})
            assert (state["result"], state["data"]) == ("programmed", {"step": 2})

            stored = await lab.runtime.store.task(job["task_id"])
            assert stored.status == "done" and stored.data == {"step": 2}
            assert stored.session_id == sid and stored.result == "programmed"


async def test_join_and_run_sync(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/submit/wait_for", {"args": ["g"]})
            tid = job["task_id"]
            assert await post(browser, lab, f"/join/{tid}", {"timeout": 0.05}) == (
                200,
                {"timed_out": False, "status": "running", "result": None},
            )
            assert (await post(browser, lab, f"/join/{tid}", {"timeout": 0.05, "strict": True}))[
                1
            ] == {"timed_out": True, "status": "running"}
            joining = asyncio.ensure_future(post(browser, lab, f"/join/{tid}"))
            await asyncio.sleep(0.05)
            assert not joining.done()
            gates["g"].set()  # join wakes when the task finishes: no polling
            assert (await joining)[1] == {"timed_out": False, "status": "done", "result": "g"}

            _, quick = await post(browser, lab, "/run_sync/add", {"args": [40, 2]})
            assert (quick["status"], quick["result"]) == ("done", 42)
            _, slow = await post(
                browser, lab, "/run_sync/wait_for", {"args": ["h"], "timeout": 0.1}
            )
            assert slow["status"] == "running"  # returned at its timeout, unfinished
            gates["h"].set()


async def test_inline_calls(tmp_path, gates):
    gates["inline"].set()
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            assert await post(browser, lab, "/inline") == (
                200,
                {"sum": 3, "product": 12, "flashed": "flashed"},
            )
            # While a unique task runs, an inline call of it is refused.
            _, job = await post(browser, lab, "/submit/program_board", {"args": ["held"]})
            assert (await post(browser, lab, "/inline"))[0] == 409
            gates["held"].set()
            await wait_status(browser, lab, job["task_id"], {"done"})
            assert (await post(browser, lab, "/inline"))[0] == 200
        # Inline runs leave no record.
        names = [t.name for t in await lab.runtime.store.recent_tasks(10)]
        assert names == ["program_board"]


async def test_unique_global_fifty_concurrent_submissions(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        students = [await student(lab) for _ in range(5)]
        try:
            answers = await asyncio.gather(
                *(
                    post(browser, lab, "/submit/program_board", {"args": ["g"]})
                    for _ in range(10)
                    for _, browser in students
                )
            )
            states = [a for _, a in answers]
            accepted = [s for s in states if s["status"] in ("submitted", "running")]
            rejected = [s for s in states if s["status"] == "failed"]
            assert len(accepted) == 1 and len(rejected) == 49
            assert all(s["error"]["code"] == "already-running" for s in rejected)
            # Rejected at once, never queued: they are finished already.
            assert all(s["finished_at"] is not None for s in rejected)
            gates["g"].set()
            winner = lab.runtime.tasks.get(accepted[0]["task_id"])
            assert (await winner.join(10)).done
            # Once it has finished, the next submission is accepted.
            gates["g2"].set()
            _, again = await post(students[1][1], lab, "/submit/program_board", {"args": ["g2"]})
            assert again["status"] in ("submitted", "running")
        finally:
            for _, browser in students:
                await browser.close()
        await lab.runtime.tasks.get(again["task_id"]).join(10)
        # The refused ones wrote nothing: a click is not a record.
        rows = await lab.runtime.store.recent_tasks(100)
        assert sorted(t.status for t in rows) == ["done"] * 2


async def test_unique_user_is_per_session(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        (_, alice), (_, bob) = await student(lab), await student(lab)
        async with alice, bob:
            answers = await asyncio.gather(
                *(post(b, lab, "/submit/compile_code", {"args": ["c"]}) for b in [alice] * 25),
                *(post(b, lab, "/submit/compile_code", {"args": ["c"]}) for b in [bob] * 25),
            )
            states = [a for _, a in answers]
            for half in (states[:25], states[25:]):
                assert sum(1 for s in half if s["status"] != "failed") == 1
                assert (
                    sum(
                        1
                        for s in half
                        if s["error"]
                        == {
                            "code": "already-running",
                            "message": "compile_code is already running",
                        }
                    )
                    == 24
                )
            gates["c"].set()


async def test_blocked_threads_never_delay_the_loop(tmp_path, gates):
    """All task threads busy: HTTP and coroutine tasks still answer at once."""
    extra = "[tasks]\nthreads = 2\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            busy = [
                (await post(browser, lab, "/submit/wait_for", {"args": [f"busy-{i}"]}))[1]
                for i in range(3)
            ]
            for job in busy[:2]:
                await wait_status(browser, lab, job["task_id"], {"running"})
            # The third waits for a free thread.
            assert (await task_state(browser, lab, busy[2]["task_id"]))[1]["status"] == "submitted"
            async with asyncio.timeout(5):
                async with browser.get(lab.url("/labrt/status")) as r:
                    assert (await r.json())["state"] == "active"
                _, quick = await post(browser, lab, "/run_sync/add", {"args": [1, 1]})
                assert quick["result"] == 2
                gates["async"].set()
                _, coro = await post(browser, lab, "/run_sync/wait_async", {"args": ["async"]})
                assert coro["status"] == "done"
            gates.open_all()
            for job in busy:
                await wait_status(browser, lab, job["task_id"], {"done"})


async def test_thread_bound_and_fifo_order(tmp_path, gates):
    started: list[str] = []
    extra = "[tasks]\nthreads = 2\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates, started)) as lab:
        _, browser = await student(lab)
        async with browser:
            names = [f"job-{i}" for i in range(6)]
            jobs = [(await post(browser, lab, "/submit/wait_for", {"args": [n]}))[1] for n in names]
            for step in range(0, 6, 2):
                # Exactly two run at a time, the oldest ones.
                await wait_status(browser, lab, jobs[step]["task_id"], {"running"})
                await wait_status(browser, lab, jobs[step + 1]["task_id"], {"running"})
                later = [
                    (await task_state(browser, lab, j["task_id"]))[1]["status"]
                    for j in jobs[step + 2 :]
                ]
                assert set(later) <= {"submitted"}
                assert len(lab.runtime.tasks._pool._threads) <= 2
                gates[names[step]].set()
                gates[names[step + 1]].set()
            for job in jobs:
                await wait_status(browser, lab, job["task_id"], {"done"})
    assert started == names


async def test_dispose_waits_for_a_stopping_task(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/submit/polite", {"args": ["p"]})
            await wait_status(browser, lab, job["task_id"], {"running"})
        task = lab.runtime.tasks.get(job["task_id"])
        disposing = asyncio.ensure_future(lab.call("DELETE", f"/ldl/sessions/{sid}"))
        async with asyncio.timeout(10):
            while not task.stopping:
                await asyncio.sleep(0.005)
        # The task is winding down: the RLMS is told to ask again, the next student waits.
        assert await lab.should_finish(sid) == 2
        starting = asyncio.ensure_future(lab.start())
        await asyncio.sleep(0.05)
        assert not disposing.done() and not starting.done()
        gates["p"].set()
        assert await disposing == (200, {"message": "Deleted"})
        await starting
        assert (task.status, task.result) == ("done", "stopped early")
        assert await lab.should_finish(sid) == -1


async def test_stop_ignoring_tasks_do_not_hang_dispose(tmp_path, gates, caplog):
    extra = "[session]\ndispose_timeout = 0.3\n[tasks]\nthreads = 1\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser:
            _, thread_job = await post(browser, lab, "/submit/stubborn", {"args": ["s"]})
            _, coro_job = await post(browser, lab, "/submit/stubborn_async")
            _, queued = await post(browser, lab, "/submit/wait_for", {"args": ["q"]})
            for job in (thread_job, coro_job):
                await wait_status(browser, lab, job["task_id"], {"running"})
        async with asyncio.timeout(10):
            assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (
                200,
                {"message": "Deleted"},
            )
        manager = lab.runtime.tasks
        assert "ignored the stop" in caplog.text
        assert manager.overdue == {thread_job["task_id"]: "stubborn"}
        coro = manager.get(coro_job["task_id"])
        assert (coro.status, coro.error["code"]) == ("failed", "stopped")
        # The one thread is held by the stubborn task: the queued one never starts.
        waiting = manager.get(queued["task_id"])
        assert (waiting.status, waiting.error["code"]) == ("failed", "stopped")
        gates["s"].set()
        await manager.get(thread_job["task_id"]).join(5)
        assert manager.get(thread_job["task_id"]).result == "finally"
        assert manager.overdue == {}


async def test_no_tasks_for_an_ended_session(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        sid = await lab.start()
        session = lab.runtime.sessions.get(sid)
        from labrt._engine.context import bind, unbind

        lab_obj = lab.runtime.lab
        await lab.call("DELETE", f"/ldl/sessions/{sid}")
        token = bind(lab.runtime.sessions, session)
        try:
            task = await lab_obj.task_functions["add"].delay(1, 2)
        finally:
            unbind(token)
        assert (task.status, task.error["code"]) == ("failed", "session-over")
        with pytest.raises(RuntimeError, match="belongs to a student's session"):
            await lab_obj.task_functions["add"].delay(1, 2)


async def test_a_task_is_invisible_to_other_sessions(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        (_, alice), (_, bob) = await student(lab), await student(lab)
        async with alice, bob:
            _, job = await post(alice, lab, "/submit/wait_for", {"args": ["a"]})
            tid = job["task_id"]
            assert (await task_state(bob, lab, tid))[0] == 403
            assert (await post(bob, lab, f"/join/{tid}"))[0] == 404  # lab.get_task: None
            async with bob.get(lab.url("/mine")) as r:
                assert (await r.json())["tasks"] == []
            async with alice.get(lab.url("/mine")) as r:
                assert await r.json() == {"tasks": [tid], "running": [tid], "user": "jdoe"}
            status, anonymous = await lab.call("GET", f"/labrt/tasks/{tid}", auth=None)
            assert status == 401 and anonymous["error"] is True
            assert (await task_state(alice, lab, "no-such-task"))[0] == 404
            gates["a"].set()


async def test_finished_tasks_are_kept_then_forgotten(tmp_path, gates):
    extra = "[tasks]\nkeep_results = 60\n[session]\ntimeout = 0\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/run_sync/add", {"args": [1, 2]})
            await lab.advance(59)
            assert (await task_state(browser, lab, job["task_id"]))[0] == 200
            await lab.advance(1)
            await lab.runtime.tasks.settle()
            assert (await task_state(browser, lab, job["task_id"]))[0] == 404
            assert await lab.runtime.store.task(job["task_id"]) is None


def test_registration_errors():
    lab = Lab()
    with pytest.raises(ValueError, match="unique must be"):
        lab.task(unique="session")

    @lab.task
    def once(): ...

    with pytest.raises(ValueError, match="already registered"):

        @lab.task
        def once(): ...

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(once.delay())


def test_current_task_outside_a_task():
    assert not current_task
    assert current_task.stopping is False
    with pytest.raises(RuntimeError, match="not inside a task"):
        _ = current_task.data


async def test_task_records_survive_a_restart(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/run_sync/add", {"args": [1, 2]})
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        task = lab.runtime.tasks.get(job["task_id"])
        assert (task.status, task.result) == ("done", 3)
        assert json.loads((await lab.runtime.store.task(task.task_id)).args) == {
            "args": [1, 2],
            "kwargs": {},
        }


async def test_stopping_a_queued_task_finishes_it_at_once(tmp_path, gates):
    async with serve_lab(tmp_path, "[tasks]\nthreads = 1\n", lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, busy = await post(browser, lab, "/submit/wait_for", {"args": ["busy"]})
            _, queued = await post(browser, lab, "/submit/compile_code", {"args": ["never"]})
            await post(browser, lab, f"/stop/{queued['task_id']}")
            state = await wait_status(browser, lab, queued["task_id"], {"failed"})
            assert state["error"] == {"code": "stopped", "message": "stopped before it started"}
            # Its unique claim is gone with it.
            _, again = await post(browser, lab, "/submit/compile_code", {"args": ["c"]})
            assert again["status"] == "submitted"
            gates.open_all()
            await wait_status(browser, lab, busy["task_id"], {"done"})


async def test_others_see_data_as_last_stored(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/submit/quiet_progress", {"args": ["q"]})
            await wait_status(browser, lab, job["task_id"], {"running"})
            assert (await task_state(browser, lab, job["task_id"]))[1]["data"] == {}
            gates["q"].set()
            async with asyncio.timeout(10):
                while (await task_state(browser, lab, job["task_id"]))[1]["data"] != {"step": 1}:
                    await asyncio.sleep(0.01)
            gates["q-end"].set()
            state = await wait_status(browser, lab, job["task_id"], {"done"})
            assert state["data"] == {"step": 1}  # the non-JSON change was never stored
        assert (await lab.runtime.store.task(job["task_id"])).data == {"step": 1}


async def test_logout_from_a_task_does_not_wait_for_itself(tmp_path, gates):
    extra = "[session]\ndispose_timeout = 600\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser, asyncio.timeout(30):
            # The route waiting for the task is the session's code too: the dispose that the
            # task began cancels it, and the page hears that the session is over.
            status, answer = await post(browser, lab, "/run_sync/leave")
            assert status == 401 and answer["message"] == "Your session is over."
            (task,) = lab.runtime.tasks.of_session(sid)
            await task.join()
            await lab.settle()
        assert (task.status, task.result) == ("done", "left")
        assert (await lab.runtime.store.session(sid)).end_reason == "logged-out"


async def test_user_data_changed_by_a_task_is_saved(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser:
            # Submitted, then no request of the session: only the task's end can save it.
            _, job = await post(browser, lab, "/submit/note_in_user_data")
            assert (await lab.runtime.tasks.get(job["task_id"]).join(10)).result == "noted"
        await lab.runtime.sessions.settle()
        assert (await lab.runtime.store.session(sid)).data == {"noted": True}


async def test_a_thread_still_running_at_stop_is_recorded_interrupted(tmp_path, gates):
    extra = "[session]\ndispose_timeout = 0.2\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/submit/stubborn", {"args": ["s"]})
            await wait_status(browser, lab, job["task_id"], {"running"})
    gates.open_all()
    db = sqlite3.connect(tmp_path / "labrt.sqlite")
    try:
        status, error = db.execute(
            "SELECT status, error FROM tasks WHERE task_id = ?", (job["task_id"],)
        ).fetchone()
    finally:
        db.close()
    assert (status, json.loads(error)["code"]) == ("failed", "interrupted")


def test_a_task_function_runs_plainly_without_a_lab_running(gates):
    lab = task_lab(gates)
    assert lab.task_functions["multiply"](6, 7) == 42


async def test_a_thousand_refused_submissions_write_nothing(tmp_path, gates):
    async with serve_lab(tmp_path, lab=task_lab(gates)) as lab:
        _, browser = await student(lab)
        async with browser:
            _, job = await post(browser, lab, "/submit/program_board", {"args": ["flood"]})
            await wait_status(browser, lab, job["task_id"], {"running"})
            wal = (tmp_path / "labrt.sqlite-wal").stat().st_size
            answers = await asyncio.gather(
                *(
                    post(browser, lab, "/submit/program_board", {"args": ["flood"]})
                    for _ in range(1000)
                )
            )
            assert {(status, a["error"]["code"]) for status, a in answers} == {
                (200, "already-running")
            }
            assert len(await lab.runtime.store.recent_tasks(10_000)) == 1
            assert len(lab.runtime.tasks.all()) == 1  # nor remembered
            assert (tmp_path / "labrt.sqlite-wal").stat().st_size == wal
            gates["flood"].set()
            await wait_status(browser, lab, job["task_id"], {"done"})


async def test_unfinished_tasks_per_session_are_capped(tmp_path, gates):
    extra = "[tasks]\nmax_unfinished_per_session = 3\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        (_, alice), (_, bob) = await student(lab), await student(lab)
        async with alice, bob:
            jobs = [
                (await post(alice, lab, "/submit/wait_async", {"args": ["cap"]}))[1]
                for _ in range(3)
            ]
            status, answer = await post(alice, lab, "/submit/wait_async", {"args": ["cap"]})
            assert (status, answer["error"]) == (429, True)
            assert "max_unfinished_per_session" in answer["message"]
            assert len(await lab.runtime.store.recent_tasks(100)) == 3
            # The cap is each session's own.
            assert (await post(bob, lab, "/submit/add", {"args": [1, 2]}))[0] == 200
            gates["cap"].set()
            for job in jobs:
                await wait_status(alice, lab, job["task_id"], {"done"})
            assert (await post(alice, lab, "/submit/add", {"args": [1, 2]}))[0] == 200


async def test_kept_results_are_bounded_per_session(tmp_path, gates):
    extra = "[tasks]\nmax_results_per_session = 5\n"
    async with serve_lab(tmp_path, extra, lab=task_lab(gates)) as lab:
        sid, browser = await student(lab)
        async with browser:
            ids = [
                (await post(browser, lab, "/run_sync/add", {"args": [i, 1]}))[1] for i in range(12)
            ]
        await lab.runtime.tasks.settle()
        kept = [t.task_id for t in lab.runtime.tasks.of_session(sid)]
        assert kept == [job["task_id"] for job in ids[-5:]]  # the latest results
        stored = {t.task_id for t in await lab.runtime.store.recent_tasks(100)}
        assert stored == set(kept)

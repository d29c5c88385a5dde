"""The crash loop, short: 20 rounds of a real ``labrt run`` driven by students and an RLMS, each
ended by ``kill -9`` at a random moment, then restarted. The rounds and their invariants are
tests/chaos.py's (its docstring lists them); ``python bench/chaos.py --kills 500`` is the long
run recorded in docs/reliability.md.

The seed is printed (``pytest -s``) and named in the failure; set ``LABRT_CHAOS_SEED`` to make
the same choices again (the interleavings are the machine's).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import pytest
from chaos import run_chaos, summary
from helpers import new_body, serve_lab

from labrt import Lab, user
from labrt.model import State

KILLS = 20


@pytest.mark.slow
def test_crash_loop_keeps_every_invariant(tmp_path):
    seed = int(os.environ.get("LABRT_CHAOS_SEED") or secrets.randbelow(2**32))
    print(f"crash loop seed {seed}")
    began = time.monotonic()
    chaos = run_chaos(tmp_path, KILLS, seed, log=print)
    print(summary(chaos, time.monotonic() - began))
    assert chaos.violations == [], f"seed {seed}: {chaos.violations}"
    assert chaos.stats.kills == KILLS
    # The rounds did work: more slots than kills, and every slot checked after every kill.
    assert chaos.stats.sessions > KILLS
    assert chaos.stats.checks > 100 * KILLS


async def wait_until(condition):
    """Poll the in-process runtime (no event says "a request reached this point")."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_start_waits_for_a_dispose_that_began_while_it_waited(tmp_path):
    """Found by the crash loop: a start waiting for one dispose was refused ("the previous
    session could not be disposed") when another slot began ending meanwhile, though
    nothing had failed. It must wait for that dispose too, then be admitted."""
    lab = Lab()
    gates: dict[str, asyncio.Event] = {}

    @lab.on_dispose
    async def dispose():
        await gates[user.session_id].wait()

    async with serve_lab(tmp_path, lab=lab) as h:
        first, second = await h.start(), await h.start()
        gates[first], gates[second] = asyncio.Event(), asyncio.Event()
        sessions = h.runtime.sessions
        ending = asyncio.ensure_future(h.call("DELETE", f"/ldl/sessions/{first}"))
        await wait_until(lambda: sessions.get(first).state is State.DISPOSING)
        body = new_body(h.clock.now())
        starting = asyncio.ensure_future(h.call("POST", "/ldl/sessions/", json=body))
        await wait_until(lambda: sessions._starts)  # waiting for the first dispose
        also_ending = asyncio.ensure_future(h.call("DELETE", f"/ldl/sessions/{second}"))
        await wait_until(lambda: sessions.get(second).state is State.DISPOSING)
        gates[first].set()
        assert await ending == (200, {"message": "Deleted"})
        gates[second].set()
        assert await also_ending == (200, {"message": "Deleted"})
        status, answer = await starting
        assert status == 200 and "session_id" in answer, answer
        kinds = [(e["session_id"], e["kind"]) for e in await h.runtime.store.events()]
        assert kinds.index((second, "ended")) < kinds.index((answer["session_id"], "starting"))

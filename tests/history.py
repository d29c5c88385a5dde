"""Pre-filling labrt's store with past sessions: a lab with a long history, for the test that
a restart's cost does not grow with it (tests/test_history.py) and for the benchmark's "status
latency with 10, 10k and 100k stored past sessions" (bench/compare/targets.py).

The rows are built by the store's own mapping (``Session`` → ``_session_row`` →
``_INSERT_SESSION``) on a store opened and migrated by ``Store.open``, so they are exactly what
labrt writes; only the commit is batched (one transaction, not two fsyncs per session as a real
session's start and end make), which would otherwise take minutes for 100k.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from labrt import store as store_module
from labrt.model import Dialect, EndReason, Session, StartRequest, State

# Ended in the last hour: labrt remembers them as expired users (read back from the store on
# their first request after a restart), as weblablib keeps them in Redis for an hour.
SPREAD = 3000.0


def student(username: str, start: float, end: float) -> StartRequest:
    """What the RLMS says of a student booked from ``start`` to ``end``."""
    return StartRequest(
        dialect=Dialect.LEGACY,
        username=username,
        username_unique=f"{username}@bench",
        full_name="Past Student",
        locale="en",
        back="https://rlms.example/after",
        experiment_name="bench",
        category_name="Bench",
        experiment_id="bench@Bench",
        client_data={},
        server_data={},
        start_date=start,
        max_date=end,
    )


def past_session(i: int, count: int, now: float) -> Session:
    ended = now - SPREAD * (i + 1) / count
    request = student(f"past{i}", ended - 300, ended)
    s = Session.from_request(secrets.token_urlsafe(32), request, ended - 300)
    s.state, s.end_reason, s.visited = State.ENDED, EndReason.EXPIRED, True
    s.disposing_at, s.ended_at, s.dispose_hook_done = ended, ended, True
    return s


async def fill_labrt_store(path: Path, count: int, now: float) -> None:
    store = await store_module.Store.open(path)
    try:
        rows = [store_module._session_row(past_session(i, count, now)) for i in range(count)]
        db = store._db
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany(store_module._INSERT_SESSION, rows)
        await db.execute("COMMIT")
    finally:
        await store.close()

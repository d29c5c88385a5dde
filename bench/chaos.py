"""Crash loop, the long run: ``kill -9`` a real ``labrt run`` hundreds of times and check
after every round that the crash lost nothing and did nothing twice.

    python bench/chaos.py [--kills 500] [--seed N] [--keep DIR]

The rounds and the invariants are tests/chaos.py's (its docstring lists them), shared with
tests/test_chaos.py, which runs fewer. docs/reliability.md has the recorded results.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos import run_chaos, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"seed {seed}", flush=True)
    began = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        chaos = run_chaos(args.keep, args.kills, seed)
    else:
        with tempfile.TemporaryDirectory(prefix="labrt-chaos-") as scratch:
            chaos = run_chaos(Path(scratch), args.kills, seed)
            if chaos.violations:
                kept = Path(tempfile.mkdtemp(prefix="labrt-chaos-failed-"))
                shutil.copytree(scratch, kept, dirs_exist_ok=True)
                print(f"files kept in {kept}")
    print(summary(chaos, time.monotonic() - began))
    for violation in chaos.violations:
        print(f"VIOLATION: {violation}")
    raise SystemExit(1 if chaos.violations else 0)


if __name__ == "__main__":
    main()

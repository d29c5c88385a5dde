"""The ``labrt`` command as an operator meets it: real processes, real exit statuses.

A broken configuration is one line on stderr naming the file, the key and what was expected,
with exit status 2 and nothing on stdout, from ``check`` and from ``run`` before it listens.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import PASSWORD, RECORDING_LAB, Spawned, write_config

from labrt.cli import FAKE_SESSION_FILE, main
from labrt.config import EXAMPLE_PASSWORD, PASSWORD_ENV
from labrt.logs import session_tag

SID = re.compile(r"[A-Za-z0-9_-]{43}")


def labrt(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m labrt ARGS`` as a user would, without a password in the environment."""
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    return subprocess.run(
        [sys.executable, "-m", "labrt", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def labrt_many(runs: dict[str, tuple[str, ...]]) -> dict[str, subprocess.CompletedProcess]:
    """Several independent commands at once: each spends half a second importing aiohttp."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(labrt, *args) for name, args in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a configuration error (exit 2, nothing on stdout)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("labrt: ")
    return lines[0]


# -- broken configurations ----------------------------------------------------------------------


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1))


def with_extra(extra: str) -> Callable[[Path], Path]:
    return lambda directory: write_config(directory, extra)


def with_edit(old: str, new: str) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        path = write_config(directory)
        edit(path, old, new)
        return path

    return build


def with_module(source: str) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        module = directory / "brokenlab.py"
        module.write_text(source)
        return write_config(directory, module=module)

    return build


def with_password_file(make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(directory: Path) -> Path:
        make(directory / "rlms.password")
        return with_edit(f'password = "{PASSWORD}"', 'password_file = "rlms.password"')(directory)

    return build


def without_rlms(directory: Path) -> Path:
    path = write_config(directory)
    text = path.read_text()
    start, end = text.index("[rlms]"), text.index("[store]")
    path.write_text(text[:start] + text[end:])
    return path


def not_a_file(directory: Path) -> Path:
    return directory / "no-such-lab.toml"


def not_utf8(directory: Path) -> Path:
    path = write_config(directory)
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    return path


def lab_not_a_table(directory: Path) -> Path:
    path = directory / "lab.toml"
    path.write_text(f'lab = "brokenlab.py"\n\n[rlms]\nusername = "rlms"\npassword = "{PASSWORD}"\n')
    return path


@dataclass(frozen=True)
class Broken:
    id: str
    build: Callable[[Path], Path]
    key: str | None  # the key the line must name; None for mistakes about the whole file
    says: tuple[str, ...]  # what was expected (or what is wrong), in the line


BROKEN = [
    Broken(
        "unknown-section",
        with_extra("[srever]\nport = 8081\n"),
        "[srever]",
        ("unknown section", "did you mean [server]?"),
    ),
    Broken(
        "unknown-key",
        with_extra("[server]\nprot = 8081\n"),
        "[server] prot",
        ("unknown key", "did you mean 'port'?"),
    ),
    Broken(
        "wrong-type-string-port",
        with_extra('[server]\nport = "8081"\n'),
        "[server] port",
        ("expected an integer from 0 to 65535", "(a string)"),
    ),
    Broken(
        "wrong-type-timeout",
        with_extra('[session]\ntimeout = "15s"\n'),
        "[session] timeout",
        ("expected a number of seconds",),
    ),
    Broken(
        "port-out-of-range",
        with_extra("[server]\nport = 70000\n"),
        "[server] port",
        ("expected an integer from 0 to 65535", "70000"),
    ),
    Broken(
        "body-size-too-small",
        with_extra("[server]\nmax_body_size = 10\n"),
        "[server] max_body_size",
        ("expected an integer from 1024",),
    ),
    Broken(
        "keep-days-negative",
        with_extra("keep_days = -1\n"),  # continues the [store] table write_config ends with
        "[store] keep_days",
        ("expected a number of days from 0",),
    ),
    Broken(
        "max-spectators-zero",
        with_extra("[push]\nmax_spectators = 0\n"),
        "[push] max_spectators",
        ("expected an integer from 1 to 100000", "0"),
    ),
    Broken(
        "max-sockets-per-session-string",
        with_extra('[push]\nmax_sockets_per_session = "8"\n'),
        "[push] max_sockets_per_session",
        ("expected an integer from 1 to 1000", "(a string)"),
    ),
    Broken(
        "max-unfinished-per-session-zero",
        with_extra("[tasks]\nmax_unfinished_per_session = 0\n"),
        "[tasks] max_unfinished_per_session",
        ("expected an integer from 1 to 10000", "0"),
    ),
    Broken(
        "max-results-per-session-float",
        with_extra("[tasks]\nmax_results_per_session = 2.5\n"),
        "[tasks] max_results_per_session",
        ("expected an integer from 1 to 100000", "(a number)"),
    ),
    Broken("missing-rlms", without_rlms, "[rlms]", ("missing section",)),
    Broken(
        "missing-password-source",
        with_edit(f'password = "{PASSWORD}"\n', ""),
        "[rlms] password",
        ("missing", "password_file", PASSWORD_ENV),
    ),
    Broken(
        "two-password-sources",
        with_edit(f'password = "{PASSWORD}"', f'password = "{PASSWORD}"\npassword_file = "x"'),
        "[rlms] password_file",
        ("only one of",),
    ),
    Broken(
        "example-password-without-dev",
        with_edit(PASSWORD, EXAMPLE_PASSWORD),
        "[rlms] password",
        ("well-known default", "--dev"),
    ),
    Broken(
        "common-password-without-dev",
        with_edit(PASSWORD, "changeme"),
        "[rlms] password",
        ("well-known default",),
    ),
    Broken(
        "password-file-missing",
        with_password_file(lambda path: None),
        "[rlms] password_file",
        ("expected a readable utf-8 file", "no such file"),
    ),
    Broken(
        "password-file-is-a-directory",
        with_password_file(lambda path: path.mkdir()),
        "[rlms] password_file",
        ("expected a readable utf-8 file",),
    ),
    Broken(
        "password-file-not-utf8",
        with_password_file(lambda path: path.write_bytes(b"s\xe9cr\xe9t\n")),
        "[rlms] password_file",
        ("expected a readable utf-8 file",),
    ),
    Broken(
        "module-file-missing",
        with_edit(str(RECORDING_LAB), str(RECORDING_LAB.with_name("nope.py"))),
        "[lab] module",
        ("expected a python file", "nope.py", "does not exist"),
    ),
    Broken(
        "module-name-missing",
        with_edit(f'"{RECORDING_LAB}"', '"no_such_package.lab"'),
        "[lab] module",
        ("cannot import", "ModuleNotFoundError", "no_such_package"),
    ),
    Broken(
        "module-syntax-error",
        with_module("from labrt import Lab\n\nlab = Lab(\n"),
        "[lab] module",
        ("cannot import", "SyntaxError", "(brokenlab.py, line 3)"),
    ),
    Broken(
        "module-raises-at-import",
        with_module("from labrt import Lab\nraise RuntimeError('no board on /dev/ttyACM0')\n"),
        "[lab] module",
        ("cannot import", "RuntimeError: no board on /dev/ttyACM0", "(brokenlab.py, line 2)"),
    ),
    Broken(
        "module-without-lab",
        with_module("from labrt import Lab\n\nlabs = []\n"),
        "[lab] module",
        ("expected the module", "to define a Lab"),
    ),
    Broken(
        "module-with-two-labs",
        with_module("from labrt import Lab\n\none = Lab()\ntwo = Lab()\n"),
        "[lab] module",
        ("found several (one, two)", "module:attribute"),
    ),
    Broken(
        "static-dir-missing",
        with_edit("tests/labs/static", "tests/labs/no-static"),
        "[lab] static",
        ("expected a directory", "no-static"),
    ),
    Broken(
        "store-in-missing-directory",
        with_edit("labrt.sqlite", "missing/labrt.sqlite"),
        "[store] path",
        ("expected a path in an existing directory",),
    ),
    Broken("lab-not-a-table", lab_not_a_table, "[lab]", ("expected a table", "(a string)")),
    Broken(
        "settings-not-a-table",
        with_edit("[lab]\n", 'settings = "fast"\n\n[lab]\n'),
        "[settings]",
        ("expected a table of the lab's own settings", "'fast' (a string)"),
    ),
    Broken(
        "settings-read-at-import",
        with_module("from labrt import Lab\n\nlab = Lab()\nFOLDER = lab.settings['folder']\n"),
        "[lab] module",
        ("cannot import", "RuntimeError: lab.settings is available once", "(brokenlab.py, line 4)"),
    ),
    Broken(
        "lab-section-misspelt",
        with_edit('[lab]\nname = "test"', '[labs]\nname = "test"'),
        "[labs]",
        ("unknown section", "did you mean [lab]?"),
    ),
    Broken("invalid-toml", with_extra("[server\nport = 1\n"), None, ("invalid toml", "line")),
    Broken("config-not-utf8", not_utf8, None, ("expected utf-8 text",)),
    Broken("config-file-missing", not_a_file, None, ("no such file",)),
    Broken("config-is-a-directory", lambda directory: directory, None, ("directory",)),
]


def names_file(line: str, path: Path) -> bool:
    return f"{path}: " in line or f"{path.resolve()}: " in line


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """`labrt check` run on every broken config (all at once, to keep the suite fast)."""
    paths = {case.id: case.build(tmp_path_factory.mktemp(case.id)) for case in BROKEN}
    results = labrt_many({name: ("check", str(path)) for name, path in paths.items()})
    return {name: (paths[name], results[name]) for name in paths}


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.id)
def test_check_reports_one_line_and_exits_2(checked, case: Broken):
    path, result = checked[case.id]
    line = one_error_line(result)
    assert names_file(line, path), line
    if case.key is not None:
        assert f": {case.key}: " in line, line
    for fragment in case.says:
        assert fragment.lower() in line.lower(), line
    assert PASSWORD not in line  # a config error never shows the RLMS password


def test_check_good_config(tmp_path):
    path = write_config(tmp_path)
    result = labrt("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{path.resolve()}: OK\n")
    assert "hooks: on_start, on_dispose, routes: 3, tasks: block, messages: none" in result.stdout
    assert not (tmp_path / "labrt.sqlite").exists()  # checking starts nothing


def test_dev_lets_the_example_password_through(tmp_path):
    path = write_config(tmp_path)
    edit(path, PASSWORD, EXAMPLE_PASSWORD)
    results = labrt_many({"plain": ("check", str(path)), "dev": ("check", str(path), "--dev")})
    assert "well-known default" in one_error_line(results["plain"])
    assert results["dev"].returncode == 0, results["dev"].stderr
    assert ": OK" in results["dev"].stdout


def test_run_refuses_a_broken_config_before_listening(tmp_path):
    """From the config (the port) and from importing the module: one line, nothing started."""
    paths = {}
    for case in BROKEN:
        if case.id in ("port-out-of-range", "module-raises-at-import"):
            (tmp_path / case.id).mkdir()
            paths[case.id] = (case, case.build(tmp_path / case.id))
    results = labrt_many(
        {name: ("run", str(path), "--port", "0") for name, (_, path) in paths.items()}
    )
    for name, (case, path) in paths.items():
        line = one_error_line(results[name])  # one line: not even a log line about listening
        assert names_file(line, path) and f": {case.key}: " in line, line
        assert not (path.parent / "labrt.sqlite").exists()  # nothing started, nothing stored


# -- help ---------------------------------------------------------------------------------------


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(main))


@pytest.fixture(scope="module")
def helped() -> dict[str, subprocess.CompletedProcess]:
    return labrt_many({" ".join(path): (*path, "--help") for path in COMMANDS})


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "labrt")
def test_help(helped, path):
    result = helped[" ".join(path)]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: ")
    assert " ".join(("labrt", *path)) in result.stdout.splitlines()[0]


def test_every_command_is_covered_by_help():
    covered = {" ".join(p) for p in COMMANDS}
    assert {"", "run", "check", "fake", "fake new", "fake status", "fake dispose"} <= covered
    assert "sessions" in covered


# -- fake RLMS against a running lab, then the sessions table -------------------------------------


@pytest.mark.parametrize("dialect", ["weblab", "ldl"])
def test_fake_rlms_against_a_spawned_lab(tmp_path, dialect):
    config = write_config(tmp_path)
    server = Spawned(config)
    try:
        fake = ("--url", server.url, "--dialect", dialect)

        new = labrt("fake", "new", str(config), *fake, "--assigned-time", "600", cwd=tmp_path)
        assert new.returncode == 0, new.stderr
        found = re.fullmatch(r"session: (\S+)\nopen: +(\S+)\n", new.stdout)
        assert found, new.stdout
        sid, url = found.groups()
        assert SID.fullmatch(sid)
        assert url == f"{server.url}/callback/{sid}"
        assert (tmp_path / FAKE_SESSION_FILE).read_text().strip() == sid

        status = labrt("fake", "status", str(config), *fake, cwd=tmp_path)
        assert (status.returncode, status.stdout) == (0, "should_finish: 5\n"), status.stderr

        dispose = labrt("fake", "dispose", str(config), *fake, cwd=tmp_path)
        assert (dispose.returncode, dispose.stdout) == (0, "Deleted\n"), dispose.stderr
        assert not (tmp_path / FAKE_SESSION_FILE).exists()

        after = labrt("fake", "status", str(config), *fake, cwd=tmp_path)
        assert after.returncode == 1
        assert after.stdout == ""
        assert after.stderr.splitlines() == [
            f"labrt: no {FAKE_SESSION_FILE} here: start a session with `labrt fake new` first"
        ]

        # The operator's table, read while the lab runs: a short hash, never the session id.
        table = labrt("sessions", str(config))
        assert table.returncode == 0, table.stderr
        _assert_table(table.stdout, sid)
    finally:
        exit_status = server.stop()
    assert exit_status == 0, server.log.read_text()
    assert sid not in server.log.read_text()  # the log names sessions by their tag only
    table = labrt("sessions", str(config))
    assert table.returncode == 0, table.stderr
    _assert_table(table.stdout, sid)


def _assert_table(text: str, sid: str) -> None:
    header, *rows = text.splitlines()
    assert header.split() == ["SESSION", "STARTED", "(UTC)", "MINUTES", "USER", "STATE", "REASON"]
    assert len(rows) == 1, text
    assert rows[0].split()[0] == session_tag(sid)
    assert rows[0].split()[-2:] == ["ended", "disposed-by-rlms"]
    assert "10.0" in rows[0].split()  # 600 s
    assert sid not in text


@pytest.mark.parametrize(
    ("args", "unique"),
    [
        ((), "john.smith@institution"),
        (("--username", "ana"), "ana@institution"),
        (("--username", "ana", "--username-unique", "ana.g@uni.example"), "ana.g@uni.example"),
    ],
)
def test_fake_new_unique_name_follows_the_username(tmp_path, monkeypatch, args, unique):
    """The unique name is the username's, unless given: two fake students are two users."""
    import labrt.cli

    sent = []

    async def start(self, request):
        sent.append(request)
        return {"session_id": "s1", "url": "http://lab/callback/s1"}

    monkeypatch.setattr(labrt.cli.FakeRlms, "start", start)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["fake", "new", str(write_config(tmp_path)), *args])
    assert result.exit_code == 0, result.output
    (request,) = sent
    assert request.username_unique == unique
    assert request.username == (args[1] if args else "john.smith")


def test_fake_status_without_a_lab_fails_clearly(tmp_path):
    (tmp_path / FAKE_SESSION_FILE).write_text("x" * 43 + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        config = write_config(tmp_path, f"[server]\nport = {taken.getsockname()[1]}\n")
        result = labrt("fake", "status", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labrt: cannot reach the lab at "), lines


def test_sessions_before_the_lab_ever_ran(tmp_path):
    config = write_config(tmp_path)
    result = labrt("sessions", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no store yet at ")
    assert not (tmp_path / "labrt.sqlite").exists()

"""The documentation keeps up with the code: every config key, public name, command, driver
kind with its options, and labrt.js function, event and close code is documented, and every
relative link in the docs leads somewhere.

The lists are taken from the code itself (the config loader's own "known keys" messages, each
driver kind's own "known" options, ``labrt.__all__``, ``drivers.__all__``, the click command
tree, the source of labrt.js and labrt/_engine/push.py), so adding a key, an option, a name, a
command or a close code without documenting it fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest
from aiohttp import WSCloseCode

import drivers
import labrt
import labrt._engine.push as push_module
from drivers import Driver, Environment, OptionError
from drivers.kinds import KINDS
from drivers.pins import PIN_FACTORIES
from labrt.cli import main
from labrt.config import KNOWN_DEFAULT_PASSWORDS, PASSWORD_ENV, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# -- configuration keys -------------------------------------------------------------------


def _toml(tables: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            lines.append(f"{key} = {shown}")
        lines.append("")
    return "\n".join(lines)


def _error(directory: Path, tables: dict[str, dict[str, object]]) -> ConfigError:
    path = directory / "lab.toml"
    path.write_text(_toml(tables), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def _listed(message: str, prefix: str) -> list[str]:
    found = re.search(re.escape(prefix) + r"([^)]*)\)", message)
    assert found, f"expected {prefix!r}... in the error message, got: {message}"
    return [name.strip() for name in found.group(1).split(",")]


def _sections(directory: Path, base: dict[str, dict[str, object]]) -> list[str]:
    error = _error(directory, {**base, "zzz-not-a-section": {}})
    return _listed(error.message, "unknown section (known: ")


def _known_keys(directory: Path, base: dict[str, dict[str, object]], section: str) -> list[str]:
    tables = {name: dict(table) for name, table in base.items()}
    tables.setdefault(section, {})["zzz_not_a_key"] = 1
    error = _error(directory, tables)
    if error.key != f"[{section}] zzz_not_a_key":
        pytest.fail(
            f"could not reach [{section}]'s unknown-key check: {error}. If a required key was "
            "added, give it a valid value in this test's base config."
        )
    return _listed(error.message, "unknown key (known keys: ")


def config_keys(directory: Path, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """Every (section, key) the config loader accepts, as the loader itself lists them."""
    (directory / "lab.py").write_text("", encoding="utf-8")
    (directory / "password").write_text("a-real-secret-for-the-docs-test\n", encoding="utf-8")
    monkeypatch.setenv("DOCS_TEST_PASSWORD", "a-real-secret-for-the-docs-test")
    monkeypatch.setenv(PASSWORD_ENV, "a-real-secret-for-the-docs-test")
    rlms = {"username": "rlms"}
    # [rlms] names only the password source in use among its known keys: try each of them.
    variants = [
        {**rlms, "password": "a-real-secret-for-the-docs-test"},
        {**rlms, "password_file": "password"},
        {**rlms, "password_env": "DOCS_TEST_PASSWORD"},
        rlms,  # no source: the default environment variable
    ]
    keys: set[tuple[str, str]] = set()
    for variant in variants:
        base: dict[str, dict[str, object]] = {"lab": {"module": "lab.py"}, "rlms": variant}
        for section in _sections(directory, base):
            if section == "drivers":
                # Not keys but one table per device ([drivers.NAME]), each with a kind's
                # options: see test_every_driver_kind_and_option_is_documented.
                continue
            if section == "settings":
                # Free-form: the lab's own keys (test_the_free_form_settings_are_documented).
                continue
            found = _known_keys(directory, base, section)
            assert found, f"[{section}] lists no known keys"
            keys |= {(section, key) for key in found}
    return keys


def test_every_config_key_is_documented(tmp_path, monkeypatch):
    keys = config_keys(tmp_path, monkeypatch)
    assert ("server", "port") in keys and ("rlms", "password_file") in keys  # the probe works
    doc = read("configuration.md")
    missing = sorted(f"[{s}] {k}" for s, k in keys if f"`[{s}] {k}`" not in doc)
    assert missing == [], f"docs/configuration.md lacks `[section] key` entries for {missing}"
    sections = {s for s, _ in keys}
    assert sorted(s for s in sections if f"`[{s}]`" not in doc) == []
    assert "`[drivers.NAME]`" in doc


def test_the_free_form_settings_are_documented(tmp_path):
    assert "settings" in _sections(tmp_path, {"lab": {"module": "lab.py"}})
    doc = read("configuration.md")
    assert "## `[settings]`" in doc and "`lab.settings`" in doc
    assert "`lab.settings`" in read("author-api.md")


def test_password_rules_are_documented():
    doc = read("configuration.md")
    assert f"`{PASSWORD_ENV}`" in doc
    missing = sorted(p for p in KNOWN_DEFAULT_PASSWORDS if p and f"`{p}`" not in doc)
    assert missing == [], f"docs/configuration.md does not list the refused passwords {missing}"
    assert "exit status 2" in doc.lower()


# -- hardware: driver kinds and their options -------------------------------------------------

# Valid values for the options a kind requires, so that its validate gets to the probe.
_REQUIRED_OPTIONS: dict[str, object] = {"pin": 17, "url": "loop://"}
_PROBE = "zzz_not_an_option"


def kind_options(cls: type[Driver]) -> list[str]:
    """The option keys a driver kind accepts, as its own validate lists them when it refuses
    an unknown one ("unknown option; known: pin, safe, ...", drivers.options.check_keys)."""
    table: dict[str, object] = {_PROBE: 1}
    while True:
        try:
            cls.validate(table)
        except OptionError as exc:
            if exc.key == _PROBE:
                found = re.search(r"known: (.*)$", exc.expected)
                assert found, f"{cls.__name__}.validate does not list its options: {exc}"
                return [key.strip() for key in found.group(1).split(",")]
            if exc.key in _REQUIRED_OPTIONS and exc.key not in table:
                table[exc.key] = _REQUIRED_OPTIONS[exc.key]
                continue
            pytest.fail(
                f"could not reach {cls.__name__}'s unknown-option check: {exc}. If a required "
                "option was added, give it a valid value in _REQUIRED_OPTIONS."
            )
        pytest.fail(f"{cls.__name__}.validate accepted the unknown option {_PROBE!r}")


def doc_section(doc: str, heading: str) -> str:
    """The prose under the first heading matching ``heading`` (a regex), up to the next
    heading of the same or a higher level."""
    lines = _prose(doc).splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"(#{1,6})\s+(.*)", line)
        if found and re.search(heading, found.group(2)):
            level = len(found.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if re.match(rf"#{{1,{level}}}\s", lines[j])),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    pytest.fail(f"no heading matching {heading!r}")


def table_keys(text: str) -> set[str]:
    """The first cells of the table rows in ``text``, when they are one code span."""
    return set(re.findall(r"^\| `([^`]+)`", text, re.M))


def kind_members(cls: type[Driver]) -> set[str]:
    """The public methods and properties a kind adds for the lab's code."""
    runtime_side = set(vars(Driver)) | {"kind"}
    return {
        name
        for klass in cls.__mro__
        if issubclass(klass, Driver) and klass is not Driver
        for name in vars(klass)
        if not name.startswith("_") and (name not in runtime_side or name == "safe")
    }


def test_every_driver_kind_and_option_is_documented():
    doc = read("hardware.md")
    assert {"gpio.output", "serial"} <= set(KINDS)  # the probe sees the kinds
    for kind, cls in KINDS.items():
        section = doc_section(doc, rf"^`{re.escape(kind)}`")
        options = kind_options(cls)
        assert {"pin", "pins", "url"} & set(options), (kind, options)  # the probe works
        missing = [key for key in options if key not in table_keys(section)]
        assert missing == [], (
            f"docs/hardware.md's section on `{kind}` has no table row for the options {missing}"
        )
        absent = sorted(name for name in kind_members(cls) if not _in_code(name, section))
        assert absent == [], f"docs/hardware.md's section on `{kind}` does not mention {absent}"


def test_driver_kinds_are_listed_in_the_configuration_reference():
    doc = read("configuration.md")
    missing = [kind for kind in KINDS if f'`"{kind}"`' not in doc]
    assert missing == [], f"docs/configuration.md's [drivers.NAME] does not list {missing}"


def test_every_pin_library_is_documented():
    hardware = doc_section(read("hardware.md"), r"^Pin libraries$")
    configuration = read("configuration.md")
    assert "auto" in PIN_FACTORIES and "mock" in PIN_FACTORIES
    missing = [name for name in PIN_FACTORIES if name not in table_keys(hardware)]
    assert missing == [], f"docs/hardware.md's Pin libraries table lacks {missing}"
    missing = [name for name in PIN_FACTORIES if f'`"{name}"`' not in configuration]
    assert missing == [], f"docs/configuration.md's [hardware] pins does not list {missing}"


def test_the_driver_api_is_documented():
    doc = read("hardware.md")
    own_kind = doc_section(doc, r"^Writing your own kind$")
    methods = [name for name in vars(Driver) if not name.startswith("_")]
    assert "safe" in methods and "validate" in methods
    absent = [name for name in methods if not _in_code(name, own_kind)]
    assert absent == [], f"docs/hardware.md's Writing your own kind does not mention {absent}"
    fields = [field.name for field in dataclasses.fields(Environment)]
    absent = [name for name in fields if not _in_code(name, own_kind)]
    assert absent == [], f"docs/hardware.md does not describe Environment's {absent}"
    package = doc_section(doc, r"^The `drivers` package$")
    absent = [name for name in drivers.__all__ if f"`{name}" not in package]
    assert absent == [], f"docs/hardware.md's `drivers` package table lacks {absent}"


# -- live push: labrt.js and the WebSocket --------------------------------------------------

LABRT_JS = ROOT / "labrt" / "static" / "labrt.js"
PUSH_PY = ROOT / "labrt" / "_engine" / "push.py"


def labrt_js_functions() -> list[str]:
    """The names of the functions of labrt.js's public object, ``var labrt = {name: function
    ...}``: its keys at the object's own level, not inside the functions' bodies."""
    source = LABRT_JS.read_text(encoding="utf-8")
    start = source.index("var labrt = {") + len("var labrt = ")
    depth, top = 0, []
    for char in source[start:]:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            break
        if depth == 1 and char not in "{}":
            top.append(char)
    return re.findall(r"(\w+)\s*:\s*function\b", "".join(top))


def close_codes() -> set[int]:
    """Every close code labrt's WebSocket uses: labrt._engine.push's constants, the codes listed in
    its docstring, and aiohttp's for a message over ``[push] max_message_size``."""
    constants = {
        value
        for name, value in vars(push_module).items()
        if name.isupper() and type(value) is int and 1000 <= value <= 4999
    }
    listed = {int(code) for code in re.findall(r"^(\d{4})\s", push_module.__doc__ or "", re.M)}
    return constants | listed | {int(WSCloseCode.MESSAGE_TOO_BIG)}


def test_every_labrt_js_function_is_documented():
    section = doc_section(read("push.md"), r"^Functions$")
    names = labrt_js_functions()
    assert {"on", "send", "connect"} <= set(names), names  # the walk finds them
    rows = table_keys(section)
    missing = [n for n in names if not any(row.startswith(f"labrt.{n}(") for row in rows)]
    assert missing == [], f"docs/push.md's Functions table lacks labrt.{missing}"


def test_every_close_code_is_documented():
    codes = close_codes()
    assert {push_module.ENDED, push_module.GOING_AWAY, 1009} <= codes  # the probe works
    rows = table_keys(doc_section(read("push.md"), r"^Limits and close codes$"))
    missing = sorted(code for code in codes if str(code) not in rows)
    assert missing == [], f"docs/push.md's close code table lacks {missing}"


def test_every_page_event_and_error_code_is_documented():
    doc = read("push.md")
    js = LABRT_JS.read_text(encoding="utf-8")
    hub = PUSH_PY.read_text(encoding="utf-8")
    # Made by labrt.js itself, and sent by labrt (message("session", ...), push(sid, "task", ...)).
    events = set(re.findall(r'emit\("(\w+)"', js))
    events |= set(re.findall(r'message\(\s*"(\w+)"', hub))
    events |= set(re.findall(r'\.push\([^,()]+,\s*"(\w+)"', hub))
    assert {"tick", "session", "ended", "task", "error"} <= events, events  # the probe works
    missing = sorted(events - table_keys(doc_section(doc, r"^Events$")))
    assert missing == [], f"docs/push.md's labrt.js Events table lacks {missing}"
    codes = set(re.findall(r'_error\(\s*page,\s*"([\w-]+)"', hub))
    assert {"bad-message", "read-only"} <= codes, codes
    missing = sorted(codes - table_keys(doc_section(doc, r"^`error`$")))
    assert missing == [], f"docs/push.md's `error` section lacks the codes {missing}"


# -- the public API -------------------------------------------------------------------------


def test_every_public_name_is_documented():
    doc = read("author-api.md")
    missing = [
        name
        for name in labrt.__all__
        if name != "__version__" and not re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", doc)
    ]
    assert missing == [], f"docs/author-api.md does not mention {missing}"


# -- the command line -----------------------------------------------------------------------


def commands(group: click.Group, prefix: str = "labrt") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(commands(command, path))
    return found


def test_every_command_and_option_is_documented():
    doc = read("cli.md")
    listed = commands(main)
    assert {path for path, _ in listed} >= {"labrt run", "labrt fake new"}  # the walk works
    missing = [path for path, _ in listed if f"`{path}`" not in doc]
    assert missing == [], f"docs/cli.md does not document the commands {missing}"
    for path, command in listed:
        for param in command.params:
            if isinstance(param, click.Option):
                names = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
            else:
                names = [param.human_readable_name]
            absent = [n for n in names if not _in_code(n, doc)]
            assert absent == [], f"docs/cli.md does not document {absent} of `{path}`"
    assert _in_code("--version", doc) and _in_code("--help", doc)


def _in_code(word: str, doc: str) -> bool:
    """Whether ``word`` appears as a whole word inside a code span of ``doc``."""
    return re.search(rf"`[^`\n]*(?<![\w-]){re.escape(word)}(?![\w-])[^`\n]*`", doc) is not None


# -- links ----------------------------------------------------------------------------------

LINKED = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def _prose(text: str) -> str:
    """The text without code blocks, where brackets are code, not links."""
    return _FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub generates for the headings of a Markdown file."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = _CODE.sub("", _prose(path.read_text(encoding="utf-8")))
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_existing_files_and_headings(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{path.relative_to(ROOT)} has broken links: {broken}"


def test_the_docs_index_links_every_page():
    linked = {t.partition("#")[0] for t in relative_links(DOCS / "index.md")}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert sorted(pages - linked) == []

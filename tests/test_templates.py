"""Server-side templates (Jinja2, the ``labrt[templates]`` extra) and gettext translations.

A lab renders ``templates/*.html`` with ``lab.render``; every template sees ``user`` and
``_``/``gettext``/``ngettext`` translating into the student's RLMS locale from the lab's
catalogs (``translations/<locale>/LC_MESSAGES/messages.mo``, or ``.po``).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import serve_lab, write_config

from labrt.config import ConfigError, load_config

LAB = """\
from aiohttp import web

from labrt import Lab, requires_login, user

lab = Lab()


@lab.route("GET", "/page")
async def page(request):
    return lab.render("index.html", items=["<b>bold</b>", "two", "three"])


@lab.route("GET", "/threaded")
@requires_login
def threaded(request):  # a plain def: runs in a thread
    return lab.render("index.html", items=["only"])


@lab.route("GET", "/message")
async def message(request):
    return {"text": lab.gettext("Hello"), "n": lab.ngettext("%(num)d item", "%(num)d items", 3)}


@lab.route("GET", "/missing")
async def missing(request):
    return lab.render("nowhere.html")
"""

TEMPLATE = """\
<h1>{{ _("Hello") }}</h1>
{% if not user.is_anonymous %}<p class="who">{{ user.username }}</p>{% endif %}
<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>
<p class="count">{{ ngettext("%(num)d item", "%(num)d items", items|length) }}</p>
<p class="trans">{% trans %}Goodbye{% endtrans %}</p>
"""

SPANISH = {
    "": "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n",
    "Hello": "Hola, ¿qué tal?",
    "Goodbye": "Adiós",
    ("%(num)d item", "%(num)d items"): ("%(num)d elemento", "%(num)d elementos"),
}


def write_mo(path: Path, messages: dict) -> None:
    """A GNU .mo file (the format ``msgfmt`` writes): a header, two tables of (length,
    offset) pairs for the sorted original and translated strings, then the strings."""
    entries = []
    for original, translated in messages.items():
        if isinstance(original, tuple):
            original, translated = "\0".join(original), "\0".join(translated)
        entries.append((original.encode(), translated.encode()))
    entries.sort()
    ids = b"".join(o + b"\0" for o, _ in entries)
    strs = b"".join(t + b"\0" for _, t in entries)
    start = 7 * 4 + 16 * len(entries)  # after the header and both tables
    table_ids, table_strs, offset = [], [], 0
    for original, _ in entries:
        table_ids += [len(original), start + offset]
        offset += len(original) + 1
    for _, translated in entries:
        table_strs += [len(translated), start + offset]
        offset += len(translated) + 1
    header = struct.pack(
        "Iiiiiii", 0x950412DE, 0, len(entries), 7 * 4, 7 * 4 + 8 * len(entries), 0, 0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        header
        + struct.pack(f"{len(table_ids)}i", *table_ids)
        + struct.pack(f"{len(table_strs)}i", *table_strs)
        + ids
        + strs
    )


def write_po(path: Path, messages: dict) -> None:
    def quoted(text: str) -> str:
        lines = text.splitlines(keepends=True) or [""]
        escaped = [
            line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for line in lines
        ]
        return "\n".join(f'"{line}"' for line in (["", *escaped] if len(escaped) > 1 else escaped))

    out = ["# A catalog as pybabel init / update writes it", ""]
    for original, translated in messages.items():
        if isinstance(original, tuple):
            out += [f"msgid {quoted(original[0])}", f"msgid_plural {quoted(original[1])}"]
            out += [f"msgstr[{i}] {quoted(t)}" for i, t in enumerate(translated)]
        else:
            out += [f"msgid {quoted(original)}", f"msgstr {quoted(translated)}"]
        out.append("")
    out += ["#, fuzzy", 'msgid "Goodbye"', 'msgstr "Hasta luego (a guess)"', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")


def make_lab(directory: Path, *, po: bool = False) -> Path:
    module = directory / "lab.py"
    module.write_text(LAB)
    (directory / "templates").mkdir()
    (directory / "templates" / "index.html").write_text(TEMPLATE)
    catalog = directory / "translations" / "es" / "LC_MESSAGES"
    if po:
        fuzzy = {k: v for k, v in SPANISH.items() if k != "Goodbye"}
        write_po(catalog / "messages.po", fuzzy)
    else:
        write_mo(catalog / "messages.mo", SPANISH)
    return module


KEYS = 'templates = "templates"\ntranslations = "translations"'


async def page_as(h, dialect: str | None, path: str = "/page") -> tuple[int, str]:
    if dialect is None:  # an anonymous visitor
        async with h.http.get(h.url(path)) as r:
            return r.status, await r.text()
    sid = await h.start(dialect)
    async with h.browser() as browser:
        await h.visit(browser, sid)
        async with browser.get(h.url(path)) as r:
            assert r.headers["Content-Type"].startswith("text/html"), r.headers
            return r.status, await r.text()


async def test_a_template_renders_in_the_students_language(tmp_path):
    module = make_lab(tmp_path)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        # WebLab-Deusto's start body says request.locale = "es"
        status, spanish = await page_as(h, "weblab")
        assert status == 200, spanish
        assert "<h1>Hola, ¿qué tal?</h1>" in spanish
        assert '<p class="who">jdoe</p>' in spanish
        assert "<li>two</li><li>three</li>" in spanish  # the loop
        assert "<li>&lt;b&gt;bold&lt;/b&gt;</li>" in spanish  # values are escaped
        assert "<b>bold</b>" not in spanish
        assert '<p class="count">3 elementos</p>' in spanish
        assert '<p class="trans">Adiós</p>' in spanish

        # LabDiscoveryEngine's says "en": no English catalog, so the strings as written
        status, english = await page_as(h, "ldl")
        assert status == 200, english
        assert "<h1>Hello</h1>" in english
        assert '<p class="count">3 items</p>' in english
        assert '<p class="trans">Goodbye</p>' in english
        assert "<li>&lt;b&gt;bold&lt;/b&gt;</li>" in english

        # Nobody: the untranslated page, and no user name
        status, anonymous = await page_as(h, None)
        assert status == 200, anonymous
        assert "<h1>Hello</h1>" in anonymous
        assert 'class="who"' not in anonymous
        assert "<li>two</li><li>three</li>" in anonymous


async def test_a_plain_def_route_renders_in_its_thread_with_the_user(tmp_path):
    module = make_lab(tmp_path)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        status, text = await page_as(h, "weblab", "/threaded")
        assert status == 200, text
        assert "<h1>Hola, ¿qué tal?</h1>" in text
        assert '<p class="count">1 elemento</p>' in text
        assert '<p class="who">jdoe</p>' in text


async def test_lab_gettext_translates_in_python_code(tmp_path):
    module = make_lab(tmp_path)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        sid = await h.start("weblab")
        async with h.browser() as browser:
            await h.visit(browser, sid)
            async with browser.get(h.url("/message")) as r:
                assert await r.json() == {"text": "Hola, ¿qué tal?", "n": "3 elementos"}
        async with h.http.get(h.url("/message")) as r:
            assert await r.json() == {"text": "Hello", "n": "3 items"}


async def test_po_catalogs_are_compiled_at_load_without_fuzzy_entries(tmp_path):
    module = make_lab(tmp_path, po=True)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        status, text = await page_as(h, "weblab")
        assert status == 200, text
        assert "<h1>Hola, ¿qué tal?</h1>" in text
        assert '<p class="count">3 elementos</p>' in text
        assert '<p class="trans">Goodbye</p>' in text  # the fuzzy guess is not used


async def test_a_missing_template_is_a_500_naming_it_in_the_log(tmp_path, caplog):
    module = make_lab(tmp_path)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        status, _ = await h.call("GET", "/missing", auth=None)
        assert status == 500
    assert "nowhere.html" in caplog.text


async def test_render_without_templates_configured_says_which_key(tmp_path, caplog):
    module = make_lab(tmp_path)
    async with serve_lab(tmp_path, module=module) as h:
        status, _ = await h.call("GET", "/page", auth=None)
        assert status == 500
        # translations alone still work in Python code
        status, answer = await h.call("GET", "/message", auth=None)
        assert status == 200 and answer["text"] == "Hello"
    assert "[lab] templates" in caplog.text


def test_locale_fallback_from_region_to_language(tmp_path):
    from labrt._engine.templates import Translations

    write_mo(tmp_path / "es" / "LC_MESSAGES" / "messages.mo", SPANISH)
    write_mo(
        tmp_path / "pt_BR" / "LC_MESSAGES" / "messages.mo",
        {"": SPANISH[""], "Hello": "Olá"},
    )
    catalogs = Translations.load(tmp_path)
    assert catalogs.locales == ["es", "pt_BR"]
    for locale in ("es", "es_ES", "es-ES", "ES_es", "es_ES.UTF-8", "es_419"):
        assert catalogs.for_locale(locale).gettext("Hello") == "Hola, ¿qué tal?", locale
    assert catalogs.for_locale("pt_BR").gettext("Hello") == "Olá"
    assert catalogs.for_locale("pt-br").gettext("Hello") == "Olá"
    assert catalogs.for_locale("pt").gettext("Hello") == "Hello"  # no plain pt catalog
    for locale in (None, "", "en", "../es", "es/../../etc", "x" * 200):
        assert catalogs.for_locale(locale).gettext("Hello") == "Hello", locale


def test_template_and_translation_folders_are_checked_at_load(tmp_path):
    make_lab(tmp_path)
    config = load_config(write_config(tmp_path, lab_keys=KEYS))
    assert config.lab.templates == tmp_path / "templates"
    assert config.lab.translations == tmp_path / "translations"
    assert load_config(write_config(tmp_path)).lab.templates is None

    for key in ("templates", "translations"):
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path, lab_keys=f'{key} = "nowhere"'))
        assert caught.value.key == f"[lab] {key}"
        assert "nowhere" in caught.value.message


def test_a_broken_catalog_is_a_config_error(tmp_path):
    from labrt.loader import load_lab

    make_lab(tmp_path)
    (tmp_path / "translations" / "es" / "LC_MESSAGES" / "messages.mo").write_bytes(b"not a catalog")
    config = load_config(write_config(tmp_path, lab_keys=KEYS, module=tmp_path / "lab.py"))
    with pytest.raises(ConfigError) as caught:
        load_lab(config)
    assert caught.value.key == "[lab] translations"
    assert "messages.mo" in caught.value.message


def test_templates_without_the_extra_name_the_install_command(tmp_path, monkeypatch):
    make_lab(tmp_path)
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "aiohttp_jinja2", None)
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, lab_keys='templates = "templates"'))
    assert caught.value.key == "[lab] templates"
    assert "pip install 'labrt[templates]'" in caught.value.message
    # Translations alone need only Python's gettext
    load_config(write_config(tmp_path, lab_keys='translations = "translations"'))


def test_labrt_imports_and_runs_a_plain_lab_without_jinja2(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["jinja2"] = None  # as if it were not installed
        sys.modules["aiohttp_jinja2"] = None
        import asyncio
        import labrt, labrt.cli, labrt.runtime, labrt.testing

        async def main():
            async with labrt.testing.run_lab({str(tmp_path / "lab.toml")!r}) as lab:
                student = await lab.new_student()
                r = await student.get("/message")
                assert r.json()["text"] == "Hello", r.text

        asyncio.run(main())
        print("ok")
        """
    )
    make_lab(tmp_path)
    write_config(tmp_path, module=tmp_path / "lab.py", lab_keys='translations = "translations"')
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


AIOHTTP_JINJA2_LAB = """\
import aiohttp_jinja2

from labrt import Lab

lab = Lab()


@lab.route("GET", "/page")
@aiohttp_jinja2.template("index.html")
async def page(request):
    return {"items": ["a", "b"]}


@lab.route("GET", "/string")
async def string(request):
    return aiohttp_jinja2.render_template("index.html", request, {"items": ["c"]})
"""


async def test_aiohttp_jinja2_renders_with_the_same_environment(tmp_path):
    make_lab(tmp_path)
    module = tmp_path / "aj2_lab.py"
    module.write_text(AIOHTTP_JINJA2_LAB)
    async with serve_lab(tmp_path, module=module, lab_keys=KEYS) as h:
        status, text = await page_as(h, "weblab")
        assert status == 200, text
        assert "<h1>Hola, ¿qué tal?</h1>" in text and "<li>a</li><li>b</li>" in text
        status, text = await page_as(h, "weblab", "/string")
        assert status == 200, text
        assert '<p class="count">1 elemento</p>' in text and '<p class="who">jdoe</p>' in text

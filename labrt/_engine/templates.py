"""The lab's server-side templates and translations.

Templates are Jinja2 (the optional ``labrt[templates]`` extra, aiohttp-jinja2 and Jinja2):
imported here, lazily, only when ``[lab] templates`` is set, so that labrt runs without them.
Translations are gettext catalogs in Flask-Babel's layout,
``<folder>/<locale>/LC_MESSAGES/messages.mo`` (or ``.po``, compiled here at load), read once
with Python's own :mod:`gettext`. What a template or ``lab.gettext`` translates into is the
current student's ``locale``, read at the moment of the call: ``es_ES`` falls back to ``es``,
and anything without a catalog (``None``, an anonymous visitor, an unknown locale) to the
strings as written.
"""

from __future__ import annotations

import ast
import gettext
import io
import logging
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .context import current_session

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("labrt")

DOMAIN = "messages"  # Flask-Babel's and pybabel's default domain
INSTALL = "pip install 'labrt[templates]'"
_LOCALE = re.compile(r"[a-z]{2,8}(_[a-z0-9]{1,8})*")
_UNTRANSLATED = gettext.NullTranslations()


class CatalogError(Exception):
    """A catalog labrt cannot read: which file, and why."""


def _key(locale: str) -> str | None:
    """``es-ES``, ``es_ES.UTF-8`` or ``ES_es`` → ``es_es``; None for what is not a locale
    name (so that a locale from the RLMS never becomes a path)."""
    name = re.split(r"[.@]", locale, maxsplit=1)[0].replace("-", "_").lower()
    return name if len(name) <= 40 and _LOCALE.fullmatch(name) else None


class Translations:
    """The lab's catalogs by locale, each falling back to its language's (``pt_br`` → ``pt``)."""

    def __init__(self, catalogs: dict[str, tuple[str, gettext.NullTranslations]]) -> None:
        self._catalogs = catalogs  # key -> (the folder's name, catalog)

    @classmethod
    def load(cls, folder: Path | None) -> Translations:
        """Read every ``<locale>/LC_MESSAGES/messages.{mo,po}`` under ``folder``; raises
        :class:`CatalogError` for one that is not a catalog."""
        catalogs: dict[str, tuple[str, gettext.NullTranslations]] = {}
        for directory in sorted(folder.iterdir()) if folder is not None else []:
            key = _key(directory.name)
            messages = directory / "LC_MESSAGES" / DOMAIN
            mo, po = messages.with_suffix(".mo"), messages.with_suffix(".po")
            if key is None or not (mo.is_file() or po.is_file()):
                continue
            if mo.is_file() and po.is_file() and po.stat().st_mtime > mo.stat().st_mtime:
                log.warning("%s is newer than %s, which is the one used: compile it", po, mo)
            path = mo if mo.is_file() else po
            try:
                data = path.read_bytes()
                compiled = data if path is mo else compile_po(data)
                catalog: gettext.NullTranslations = gettext.GNUTranslations(io.BytesIO(compiled))
            except (OSError, ValueError, LookupError, struct.error, SyntaxError) as exc:
                raise CatalogError(f"{path} is not a gettext catalog: {exc}") from None
            catalogs[key] = (directory.name, catalog)
        for key, (_, catalog) in catalogs.items():
            parent = key.rpartition("_")[0]
            while parent and parent not in catalogs:
                parent = parent.rpartition("_")[0]
            if parent:
                catalog.add_fallback(catalogs[parent][1])
        return cls(catalogs)

    @property
    def locales(self) -> list[str]:
        return sorted(name for name, _ in self._catalogs.values())

    def for_locale(self, locale: str | None) -> gettext.NullTranslations:
        key = _key(locale) if locale else None
        while key:
            if key in self._catalogs:
                return self._catalogs[key][1]
            key = key.rpartition("_")[0]
        return _UNTRANSLATED

    def current(self) -> gettext.NullTranslations:
        """The catalog for the student being served (none for an anonymous visitor)."""
        bound = current_session()
        return self.for_locale(None if bound is None else bound[1].request.locale)

    def gettext(self, message: str, /, **variables: Any) -> str:
        text = self.current().gettext(message)
        return text % variables if variables else text

    def ngettext(self, singular: str, plural: str, n: int, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        return self.current().ngettext(singular, plural, n) % variables


class Templates:
    """The Jinja2 environment of ``[lab] templates`` (None without it), with ``user`` and
    ``_``/``gettext``/``ngettext`` in every template's context; and the translations."""

    def __init__(self, folder: Path | None, translations: Translations, user: object) -> None:
        self.translations = translations
        self.environment: jinja2.Environment | None = None
        if folder is not None:
            self.environment = _environment(folder, translations, user)

    def render(self, name: str, context: dict[str, Any]) -> str:
        if self.environment is None:
            raise RuntimeError(
                f'lab.render({name!r}) needs templates: set [lab] templates = "templates" '
                f"in lab.toml (a folder of Jinja2 templates; {INSTALL})"
            )
        return self.environment.get_template(name).render(context)

    def register(self, app: Any) -> None:
        """Lend the environment to aiohttp-jinja2 on ``app``, for
        ``aiohttp_jinja2.render_template`` and ``@aiohttp_jinja2.template``."""
        if self.environment is not None:
            import aiohttp_jinja2

            app[aiohttp_jinja2.APP_KEY] = self.environment


def _environment(folder: Path, translations: Translations, user: object) -> jinja2.Environment:
    import jinja2
    import markupsafe

    def translated(eval_ctx: jinja2.nodes.EvalContext, text: str, variables: dict[str, Any]) -> str:
        # As Jinja2's own "newstyle" gettext (and Flask-Babel's): the translation is the
        # template's text, the variables are values, escaped when autoescape is on.
        if eval_ctx.autoescape:
            return markupsafe.Markup(text) % variables
        return text % variables

    @jinja2.pass_eval_context
    def gettext_(eval_ctx: jinja2.nodes.EvalContext, message: str, /, **variables: Any) -> str:
        return translated(eval_ctx, translations.current().gettext(message), variables)

    @jinja2.pass_eval_context
    def ngettext_(
        eval_ctx: jinja2.nodes.EvalContext, singular: str, plural: str, n: int, /, **variables: Any
    ) -> str:
        variables.setdefault("num", n)
        text = translations.current().ngettext(singular, plural, n)
        return translated(eval_ctx, text, variables)

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(),  # .html, .htm and .xml
        extensions=["jinja2.ext.i18n"],  # {% trans %} ... {% endtrans %}
    )
    environment.newstyle_gettext = True  # type: ignore[attr-defined]  # set by the extension
    globals_: dict[str, Callable[..., Any] | object] = {
        "user": user,
        "_": gettext_,
        "gettext": gettext_,
        "ngettext": ngettext_,
    }
    environment.globals.update(globals_)
    return environment


# -- .po to .mo, as msgfmt does it ----------------------------------------------------------


def compile_po(data: bytes) -> bytes:
    """The .mo bytes of a .po file's translated, non-fuzzy messages (and its header)."""
    declared = re.search(rb"charset=([A-Za-z0-9_.:-]+)", data)
    text = data.decode(declared[1].decode() if declared else "utf-8")
    messages = _po_messages(text)
    header = messages.get("", "")
    if "charset=" in header:
        header = re.sub(r"charset=[A-Za-z0-9_.:-]+", "charset=UTF-8", header)
    else:
        header += "Content-Type: text/plain; charset=UTF-8\n"
    messages[""] = header
    return _mo(messages)


def _po_messages(text: str) -> dict[str, str]:
    messages: dict[str, str] = {}
    entry: dict[str, list[str]] = {}
    current: list[str] | None = None
    fuzzy = False

    def flush() -> None:
        nonlocal entry, fuzzy, current
        if "msgid" in entry:
            msgid = "".join(entry["msgid"])
            if "msgctxt" in entry:
                msgid = "".join(entry["msgctxt"]) + "\x04" + msgid
            if "msgid_plural" in entry:
                msgid += "\0" + "".join(entry["msgid_plural"])
                forms = sorted(
                    (int(k[7:-1]), "".join(v)) for k, v in entry.items() if k.startswith("msgstr[")
                )
                msgstr = "\0".join(form for _, form in forms)
            else:
                msgstr = "".join(entry.get("msgstr", []))
            if msgstr.strip("\0") and (msgid == "" or not fuzzy):  # as msgfmt: no guesses
                messages[msgid] = msgstr
        entry, fuzzy, current = {}, False, None

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if any(k.startswith("msgstr") for k in entry):
                flush()
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            continue
        keyword, _, rest = line.partition(" ")
        if line.startswith('"'):
            keyword, rest = "", line
        elif not re.fullmatch(r"msgctxt|msgid|msgid_plural|msgstr(\[\d+\])?", keyword):
            raise ValueError(f"line {number}: expected msgid, msgstr or a string, got {raw!r}")
        try:
            value = ast.literal_eval(rest.strip())
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, str):
            raise ValueError(f"line {number}: expected a quoted string, got {raw!r}")
        if keyword in ("msgctxt", "msgid") and any(k.startswith("msgstr") for k in entry):
            flush()
        if keyword:
            current = entry.setdefault(keyword, [])
        if current is None:
            raise ValueError(f"line {number}: a string outside any msgid or msgstr")
        current.append(value)
    flush()
    return messages


def _mo(messages: dict[str, str]) -> bytes:
    """GNU .mo: a header, the (length, offset) tables of the sorted ids and of their
    translations, then the NUL-terminated strings."""
    pairs = sorted((k.encode(), v.encode()) for k, v in messages.items())
    start = 28 + 16 * len(pairs)
    ids = b"".join(k + b"\0" for k, _ in pairs)
    strs = b"".join(v + b"\0" for _, v in pairs)
    id_table: list[int] = []
    str_table: list[int] = []
    offset = start
    for k, _ in pairs:
        id_table += [len(k), offset]
        offset += len(k) + 1
    for _, v in pairs:
        str_table += [len(v), offset]
        offset += len(v) + 1
    header = struct.pack("<7I", 0x950412DE, 0, len(pairs), 28, 28 + 8 * len(pairs), 0, 0)
    table = struct.pack(f"<{len(id_table) + len(str_table)}I", *id_table, *str_table)
    return header + table + ids + strs

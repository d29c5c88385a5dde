"""``[settings]``: the lab's own values in lab.toml, free-form, read-only as ``lab.settings``.

Every other section stays strictly checked (tests/test_cli.py has the broken cases).
"""

from __future__ import annotations

import pytest
from helpers import serve_lab, write_config

from labrt import ConfigError, Lab
from labrt.config import load_config
from labrt.loader import load_lab

SETTINGS = """
[settings]
PROGRAMS_FOLDER = "programs"
boards = ["de1-soc", "basys3"]
timeout = 12.5
retries = 3
verbose = true

[settings.loader]
path = "/opt/loader"
args = ["-c", 1, {deep = [2, 3]}]
"""

LAB = """\
import operator

from labrt import Lab, user

lab = Lab()


@lab.on_start
def start(client_data, server_data):
    return {"folder": lab.settings["PROGRAMS_FOLDER"]}


@lab.route("GET", "/settings")
async def show(request):
    return {"settings": _plain(lab.settings), "folder": user.data["folder"]}


@lab.route("GET", "/change")
def change(request):
    refused = []
    for attempt in (
        lambda: operator.setitem(lab.settings, "retries", 4),
        lambda: operator.setitem(lab.settings["loader"], "path", "/tmp"),
        lambda: lab.settings["boards"].append("zybo"),
        lambda: lab.settings["loader"]["args"][2]["deep"].append(4),
        lambda: setattr(lab, "settings", {}),
    ):
        try:
            attempt()
        except (TypeError, AttributeError) as exc:
            refused.append(type(exc).__name__)
    return {"refused": refused, "retries": lab.settings["retries"]}


def _plain(value):
    if isinstance(value, (list, tuple)):
        return {"list": [_plain(v) for v in value]}
    if hasattr(value, "keys"):
        return {k: _plain(value[k]) for k in value}
    return value
"""


def _lab_file(tmp_path, source: str = LAB):
    module = tmp_path / "settingslab.py"
    module.write_text(source)
    return module


async def test_settings_reach_the_lab_read_only_in_hooks_and_routes(tmp_path):
    module = _lab_file(tmp_path)
    async with serve_lab(tmp_path, SETTINGS, module=module) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        async with browser.get(lab.url("/settings")) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        async with browser.get(lab.url("/change")) as r:
            assert r.status == 200, await r.text()
            changed = await r.json()
    assert body == {
        "folder": "programs",
        "settings": {
            "PROGRAMS_FOLDER": "programs",
            "boards": {"list": ["de1-soc", "basys3"]},  # arrays become tuples
            "timeout": 12.5,
            "retries": 3,
            "verbose": True,
            "loader": {
                "path": "/opt/loader",
                "args": {"list": ["-c", 1, {"deep": {"list": [2, 3]}}]},
            },
        },
    }
    # Nothing can change them, at any depth, nor replace them.
    assert changed == {
        "refused": ["TypeError", "TypeError", "AttributeError", "AttributeError", "AttributeError"],
        "retries": 3,
    }


def test_settings_are_there_once_the_lab_is_loaded_and_empty_without_the_table(tmp_path):
    module = _lab_file(tmp_path, "from labrt import Lab\nlab = Lab()\n")
    lab = load_lab(load_config(write_config(tmp_path, SETTINGS, module=module)))
    assert lab.settings["loader"]["path"] == "/opt/loader"
    assert lab.settings["boards"] == ("de1-soc", "basys3")
    other = tmp_path / "other"
    other.mkdir()
    module = _lab_file(other, "from labrt import Lab\nlab = Lab()\n")
    assert dict(load_lab(load_config(write_config(other, module=module))).settings) == {}


def test_reading_settings_before_the_lab_is_loaded_says_when_they_are_available(tmp_path):
    with pytest.raises(RuntimeError, match=r"lab\.settings .*once labrt has loaded the lab"):
        Lab().settings  # noqa: B018
    module = _lab_file(tmp_path, "from labrt import Lab\nlab = Lab()\nFOLDER = lab.settings['x']\n")
    with pytest.raises(ConfigError) as caught:
        load_lab(load_config(write_config(tmp_path, SETTINGS, module=module)))
    assert caught.value.key == "[lab] module"
    assert "RuntimeError" in caught.value.message and "lab.settings" in caught.value.message
    assert "(settingslab.py, line 3)" in caught.value.message


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('settings = "fast"\n', "[settings]: expected a table of the lab's own settings"),
        ("[[settings]]\nx = 1\n", "[settings]: expected a table of the lab's own settings"),
    ],
)
def test_settings_that_are_not_a_table_are_refused(tmp_path, toml, says):
    path = write_config(tmp_path)
    path.write_text(toml + path.read_text())
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {says}"), str(caught.value)
    assert caught.value.key == "[settings]"


def test_other_sections_stay_strict(tmp_path):
    with pytest.raises(ConfigError, match=r"\[server\] PROGRAMS_FOLDER: unknown key"):
        load_config(write_config(tmp_path, SETTINGS + '[server]\nPROGRAMS_FOLDER = "x"\n'))

"""Finding the author's Lab: by file path or by ``package.module:attribute``."""

from __future__ import annotations

import pytest
from helpers import LABS, write_config

from drivers import Output
from labrt import ConfigError, Lab
from labrt.config import load_config
from labrt.loader import load_lab


def config_with_module(tmp_path, module: str):
    path = write_config(tmp_path)
    text = path.read_text().replace(f'module = "{LABS / "recording.py"}"', f'module = "{module}"')
    path.write_text(text)
    return load_config(path)


def test_module_by_dotted_name_and_attribute(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(LABS))
    lab = load_lab(config_with_module(tmp_path, "recording:lab"))
    assert isinstance(lab, Lab) and lab.hooks.on_start is not None


def test_attribute_that_is_not_a_lab(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(LABS))
    with pytest.raises(ConfigError, match=r"\[lab\] module: expected recording.record to be a Lab"):
        load_lab(config_with_module(tmp_path, "recording:record"))


def test_a_file_relative_to_the_config(tmp_path):
    (tmp_path / "mylab.py").write_text("import labrt\nlab = labrt.Lab()\n")
    assert isinstance(load_lab(config_with_module(tmp_path, "mylab.py")), Lab)


def test_two_labs_in_one_file_need_a_name(tmp_path):
    (tmp_path / "two.py").write_text("import labrt\na = labrt.Lab()\nb = labrt.Lab()\n")
    with pytest.raises(ConfigError, match="found several"):
        load_lab(config_with_module(tmp_path, "two.py"))


def test_import_error_names_the_line(tmp_path):
    (tmp_path / "broken.py").write_text("import labrt\n\nraise RuntimeError('no board')\n")
    with pytest.raises(ConfigError, match=r"RuntimeError: no board \(broken.py, line 3\)"):
        load_lab(config_with_module(tmp_path, "broken.py"))


TYPED_LAB = """\
from drivers import Input, Output
from labrt import Devices, Lab


class Hardware(Devices):
    light: {light}


lab = Lab(Hardware)
"""


def _typed(tmp_path, light: str, drivers: str):
    (tmp_path / "typed.py").write_text(TYPED_LAB.format(light=light))
    path = write_config(tmp_path, drivers)
    text = path.read_text().replace(f'module = "{LABS / "recording.py"}"', 'module = "typed.py"')
    path.write_text(text)
    return load_config(path)


LIGHT = """
[drivers.light]
kind = "gpio.output"
pin = 17
"""


def test_a_lab_names_its_devices_with_their_classes(tmp_path):
    lab = load_lab(_typed(tmp_path, "Output", LIGHT))
    assert lab.registry.devices.declared() == {"light": Output}


def test_a_named_device_missing_from_lab_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[drivers.light\]: expected a device named 'light'"):
        load_lab(_typed(tmp_path, "Output", ""))


def test_a_named_device_of_another_kind_is_a_config_error(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"\[drivers.light\] kind: expected a kind whose driver is a Input .*'gpio.output'",
    ):
        load_lab(_typed(tmp_path, "Input", LIGHT))


def test_a_device_annotated_with_something_else_fails_where_it_is_written(tmp_path):
    with pytest.raises(
        ConfigError, match=r"Hardware.light: a device is annotated .* not <class 'int'>"
    ):
        load_lab(_typed(tmp_path, "int", LIGHT))

"""The OpenAPI document shipped in the package tells the truth about the routes.

RLMS integrators and the fuzzer (tests/test_fuzz.py) read the contract from it, so a route
added, removed or given another method without the document following fails here, as does a
document that is not valid OpenAPI.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from helpers import serve_lab, write_config
from openapi_spec_validator import validate

from labrt.config import load_config
from labrt.loader import load_lab
from labrt.runtime import Runtime

# The URL spaces the document describes; everything else is the author's (routes, static files).
PREFIXES = ("/ldl/", "/weblab/", "/labrt/", "/callback/", "/healthz", "/metrics")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DEV_ONLY = "x-labrt-dev-only"


def document() -> dict:
    """The document as the installed package holds it (package data, not the source tree)."""
    text = resources.files("labrt").joinpath("static/openapi.json").read_text(encoding="utf-8")
    return json.loads(text)


def documented(doc: dict, *, dev: bool) -> dict[str, set[str]]:
    """path -> methods the document lists; dev-only operations only when ``dev``."""
    found: dict[str, set[str]] = {}
    for path, item in doc["paths"].items():
        methods = {
            m.upper() for m in METHODS if m in item and (dev or not item[m].get(DEV_ONLY, False))
        }
        if methods:
            found[path] = methods
    return found


def routed(directory: Path, *, dev: bool) -> dict[str, set[str]]:
    """path -> methods the aiohttp app answers under PREFIXES, as the router registered them.

    aiohttp adds HEAD to every GET route by itself; the document lists the GET only.
    """
    config = load_config(write_config(directory), dev=dev)
    app = Runtime(config, load_lab(config)).app
    found: dict[str, set[str]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(PREFIXES):
            found.setdefault(path, set()).add(route.method)
    for methods in found.values():
        if "GET" in methods:
            methods.discard("HEAD")
    return found


def test_the_document_is_valid_openapi():
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.")


@pytest.mark.parametrize("dev", [False, True], ids=["run", "run --dev"])
def test_every_route_is_documented_and_every_documented_path_is_routed(tmp_path, dev):
    doc, app = documented(document(), dev=dev), routed(tmp_path, dev=dev)
    missing = {p: sorted(m - doc.get(p, set())) for p, m in app.items() if m - doc.get(p, set())}
    extra = {p: sorted(m - app.get(p, set())) for p, m in doc.items() if m - app.get(p, set())}
    assert missing == {}, f"routes the OpenAPI document lacks: {missing}"
    assert extra == {}, f"operations in the OpenAPI document that no route answers: {extra}"


def test_dev_only_operations_exist_only_with_dev(tmp_path):
    dev_paths = set(documented(document(), dev=True)) - set(documented(document(), dev=False))
    assert dev_paths, "the dev pages are documented and marked x-labrt-dev-only"
    assert all(p.startswith("/labrt/dev") for p in dev_paths)
    assert not dev_paths & set(routed(tmp_path, dev=False))


def test_the_rlms_endpoints_are_the_same_under_both_prefixes():
    doc = documented(document(), dev=False)
    ldl = {p.removeprefix("/ldl"): m for p, m in doc.items() if p.startswith("/ldl/")}
    weblab = {p.removeprefix("/weblab"): m for p, m in doc.items() if p.startswith("/weblab/")}
    assert ldl == weblab
    assert ldl["/sessions/{sid}"] == {"POST", "DELETE"}


def test_every_operation_has_an_id_and_answers(tmp_path):
    ids = []
    for item in document()["paths"].values():
        for method in METHODS:
            if method in item:
                ids.append(item[method]["operationId"])
                assert item[method]["responses"], item[method]["operationId"]
    assert len(ids) == len(set(ids))


async def test_the_document_is_served_at_labrt_openapi_json(tmp_path):
    async with serve_lab(tmp_path) as lab:
        status, body = await lab.call("GET", "/labrt/openapi.json", auth=None)
    assert status == 200
    assert body == document()

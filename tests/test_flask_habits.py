"""Issue 16, items 5 to 7: what a lab ported from Flask does out of habit, and what a proxy
sends. Route return values, broken form bodies, Flask-style paths, uploads past the body
limit, and a path prefix the proxy left on."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import aiohttp
import pytest
from aiohttp import web
from helpers import serve_lab, write_config

from labrt import Lab, requires_active, user

# -- (body, status) and (body, status, headers) ----------------------------------------------


def returning_lab() -> Lab:
    lab = Lab()

    @lab.route("GET", "/pair")
    async def pair(request):
        return {"error": "no such board"}, 404

    @lab.route("GET", "/triple")
    async def triple(request):
        return "created", 201, {"X-Board": "b1"}

    @lab.route("GET", "/html")
    def html(request):  # a plain def, as in Flask
        return "<b>hi</b>", 200, {"Content-Type": "text/html; charset=utf-8"}

    @lab.route("GET", "/list")
    async def listed(request):
        return [1, 2], 202

    @lab.route("GET", "/text")
    async def text(request):
        return "plain"

    @lab.route("GET", "/response-in-tuple")
    async def response_in_tuple(request):
        return web.Response(text="x"), 400

    @lab.route("GET", "/bad-status")
    async def bad_status(request):
        return {"a": 1}, "400"

    @lab.route("GET", "/object")
    async def an_object(request):
        return object()

    return lab


async def test_a_route_may_return_body_and_status_as_flask_does(tmp_path, caplog):
    async with serve_lab(tmp_path, lab=returning_lab()) as lab:
        assert await lab.call("GET", "/pair", auth=None) == (404, {"error": "no such board"})
        assert await lab.call("GET", "/list", auth=None) == (202, [1, 2])
        async with lab.http.get(lab.url("/triple")) as r:
            assert (r.status, await r.text(), r.headers["X-Board"]) == (201, "created", "b1")
            assert r.content_type == "text/plain"
        async with lab.http.get(lab.url("/html")) as r:
            assert (r.status, await r.text(), r.content_type) == (200, "<b>hi</b>", "text/html")
        async with lab.http.get(lab.url("/text")) as r:
            assert (r.status, await r.text(), r.content_type) == (200, "plain", "text/plain")
        caplog.clear()
        for path, says in (
            ("/response-in-tuple", "an aiohttp response goes alone"),
            ("/bad-status", "the status must be an int"),
            ("/object", "returned object"),
        ):
            status, body = await lab.call("GET", path, auth=None)
            assert status == 500, (path, body)
            assert says in caplog.text, (path, caplog.text)


# -- a broken form body is the client's mistake ---------------------------------------------


def form_lab() -> Lab:
    lab = Lab()

    @lab.route("POST", "/form")
    async def form(request):
        data = await request.post()
        return {"fields": sorted(data)}

    @lab.route("POST", "/stream")
    async def stream(request):
        reader = await request.multipart()
        names = [part.name async for part in reader]
        return {"parts": names}

    @lab.route("POST", "/own-error")
    async def own_error(request):
        raise ValueError("the lab's own bug")

    return lab


BROKEN_FORMS = {
    "no-boundary": ("multipart/form-data", b"--x\r\n"),
    "garbage": ("multipart/form-data; boundary=x", b"hello world"),
    "truncated": (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nval',
    ),
}


@pytest.mark.parametrize("path", ["/form", "/stream"])
@pytest.mark.parametrize("case", sorted(BROKEN_FORMS))
async def test_a_broken_multipart_body_is_a_400(tmp_path, path, case):
    content_type, body = BROKEN_FORMS[case]
    async with serve_lab(tmp_path, lab=form_lab()) as lab:
        status, answer = await lab.call(
            "POST", path, auth=None, data=body, headers={"Content-Type": content_type}
        )
        assert status == 400, answer
        assert answer["error"] is True
        assert "form" in answer["message"], answer


async def test_a_good_form_and_the_labs_own_value_error(tmp_path):
    async with serve_lab(tmp_path, lab=form_lab()) as lab:
        form = aiohttp.FormData({"a": "1"})
        form.add_field("file", b"bits", filename="top.bit")
        assert await lab.call("POST", "/form", auth=None, data=form) == (
            200,
            {"fields": ["a", "file"]},
        )
        status, _ = await lab.call("POST", "/own-error", auth=None, data=b"")
        assert status == 500  # the lab's own ValueError stays the lab's


# -- Flask-style route paths ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "spelling"),
    [
        ("/sw/<int:n>/", r"/sw/{n:\d+}/"),
        ("/board/<name>", "/board/{name}"),
        ("/files/<path:rest>", "/files/{rest:.*}"),
    ],
)
def test_a_flask_style_path_is_refused_with_the_aiohttp_spelling(path, spelling):
    lab = Lab()
    with pytest.raises(ValueError, match="Flask") as caught:
        lab.route("GET", path)
    assert spelling in str(caught.value)
    lab.route("GET", r"/sw/{n:\d+}/")  # aiohttp's own spelling, regexes too
    lab.route("GET", r"/x/{n:\d{2}}")


def test_labrt_check_reports_a_flask_style_path(tmp_path):
    module = tmp_path / "flasky.py"
    module.write_text(
        textwrap.dedent(
            """\
            from labrt import Lab

            lab = Lab()


            @lab.route("GET", "/sw/<int:n>/")
            async def switch(request):
                return {}
            """
        )
    )
    config = write_config(tmp_path, module=module)
    result = subprocess.run(
        [sys.executable, "-m", "labrt", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result
    assert "[lab] module" in result.stderr
    assert r"{n:\d+}" in result.stderr, result.stderr
    assert "(flasky.py, line 6)" in result.stderr, result.stderr


# -- uploads: the body limit, named, logged, and raised by one route --------------------------


def upload_lab() -> Lab:
    lab = Lab()

    @lab.route("POST", "/upload", max_body_size=8192)
    async def upload(request):
        form = await request.post()
        field = form["bitstream"]
        assert isinstance(field, web.FileField)
        with field.file as file:
            return {"name": field.filename, "size": len(file.read())}

    @lab.route("POST", "/small")
    async def small(request):
        return {"size": len(await request.read())}

    @lab.route("POST", "/raw", max_body_size=8192)
    async def raw(request):
        return {"size": len(await request.read())}

    return lab


def bitstream(size: int) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("bitstream", b"\x01" * size, filename="top.bit")
    return form


SMALL_LIMIT = "[server]\nmax_body_size = 2048\n"


async def test_a_413_names_the_setting_and_is_logged_once(tmp_path, caplog):
    async with serve_lab(tmp_path, SMALL_LIMIT, lab=upload_lab()) as lab:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            status, answer = await lab.call("POST", "/small", auth=None, data=b"x" * 5000)
        assert status == 413, answer
        assert "[server] max_body_size" in answer["message"], answer
        assert "2048" in answer["message"], answer
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1, caplog.text
        assert "max_body_size" in warned[0].getMessage()
        assert "/small" in warned[0].getMessage()


async def test_a_route_raises_its_own_body_limit_and_no_other(tmp_path, caplog):
    async with serve_lab(tmp_path, SMALL_LIMIT, lab=upload_lab()) as lab:
        assert await lab.call("POST", "/upload", auth=None, data=bitstream(5000)) == (
            200,
            {"name": "top.bit", "size": 5000},
        )
        assert await lab.call("POST", "/raw", auth=None, data=b"x" * 8000) == (
            200,
            {"size": 8000},
        )
        # Every other route keeps the lab's limit.
        status, answer = await lab.call("POST", "/small", auth=None, data=b"x" * 5000)
        assert status == 413, answer
        status, answer = await lab.call("POST", "/labrt/logout", auth=None, data=b"x" * 5000)
        assert status != 200, answer
        # Past the route's own limit: the message names it, not the lab's.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            status, answer = await lab.call("POST", "/raw", auth=None, data=b"x" * 9000)
        assert status == 413, answer
        assert "8192" in answer["message"] and "max_body_size=" in answer["message"], answer
        assert "POST /raw" in answer["message"], answer
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_route_limit_must_be_a_positive_int():
    lab = Lab()
    lab.route("POST", "/firmware", max_body_size=16 * 1024 * 1024)
    for bad in (0, -1, 1.5, "16M", True):
        with pytest.raises((TypeError, ValueError), match="max_body_size"):
            lab.route("POST", "/upload", max_body_size=bad)


# -- the public_url path prefix, stripped or not ----------------------------------------------


def prefixed_lab() -> Lab:
    lab = Lab()

    @lab.route("GET", "/api/who")
    @requires_active
    async def who(request):
        return {"who": user.username, "q": request.query.get("q")}

    @lab.route("GET", "/lab1x")
    async def lab1x(request):
        return {"route": "lab1x"}

    return lab


PREFIXED = '[server]\npublic_url = "http://lab.example.org/lab1"\n'


@pytest.mark.parametrize("prefix", ["", "/lab1"])
async def test_requests_with_the_public_url_prefix_are_served_too(tmp_path, prefix):
    async with serve_lab(tmp_path, PREFIXED, lab=prefixed_lab()) as lab:
        sid = await lab.start()
        async with lab.browser() as browser:
            callback = lab.url(f"{prefix}/callback/{sid}")
            async with browser.get(callback, allow_redirects=False) as r:
                assert r.status == 302, await r.text()
                assert r.headers["Location"] == "/lab1/"  # the prefix put back, either way
                assert r.cookies["labrt"]["path"] == "/"
            async with browser.get(lab.url(f"{prefix}/api/who?q=a%2Fb")) as r:
                assert r.status == 200, await r.text()
                assert await r.json() == {"who": "jdoe", "q": "a/b"}
            async with browser.get(lab.url(f"{prefix}/style.css")) as r:
                assert r.status == 200
            async with browser.get(lab.url(f"{prefix}/labrt/labrt.js")) as r:
                assert r.status == 200
            async with browser.get(lab.url(f"{prefix}/labrt/status")) as r:
                assert (await r.json())["state"] == "active"
            async with lab.http.get(lab.url(f"{prefix}/ldl/sessions/{sid}/status")) as r:
                assert r.status == 401  # the RLMS's URLs too (without its credentials here)
            ws = await browser.ws_connect(lab.url(f"{prefix}/labrt/ws"))
            message = await ws.receive_json(timeout=5)
            assert message["event"] == "session"
            await ws.close()


async def test_only_the_whole_prefix_is_stripped(tmp_path):
    async with serve_lab(tmp_path, PREFIXED, lab=prefixed_lab()) as lab:
        assert await lab.call("GET", "/lab1x", auth=None) == (200, {"route": "lab1x"})
        status, answer = await lab.call("GET", "/lab1x/style.css", auth=None)
        assert status == 404, answer
        assert answer["message"] == "Not found: /lab1x/style.css"
        status, answer = await lab.call("GET", "/lab1/nothing-here", auth=None)
        assert status == 404, answer
        assert "/nothing-here" in answer["message"], answer
        async with lab.http.get(lab.url("/lab1"), allow_redirects=False) as r:
            assert r.status == 200  # the index of the static folder

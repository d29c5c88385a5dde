"""What a lab author writes: hooks, routes, ``user`` and the access decorators."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from helpers import serve_lab

from labrt import Lab, logout, requires_active, requires_login, user


def author_lab() -> Lab:
    lab = Lab()

    @lab.initial_url
    def initial_url():
        return f"/welcome?locale={user.locale}"

    @lab.user_loader
    def load(username_unique):
        return {"row": username_unique.upper()}

    @lab.route("GET", "/me")
    @requires_login
    async def me(request):
        return {
            "user": user.user,
            "session_id": user.session_id,
            "experiment_name": user.experiment_name,
            "category_name": user.category_name,
            "back": user.back,
            "start_date": user.start_date.isoformat(),
            "max_date": user.max_date.isoformat(),
            "is_anonymous": user.is_anonymous,
        }

    @lab.route("POST", "/leave")
    @requires_active
    async def leave(request):
        return {"left": await logout()}

    @lab.route("GET", "/plain")
    @requires_active
    def plain(request):  # a blocking handler: runs in a thread, with user set
        return web.json_response({"who": user.username}, status=201)

    @lab.route("POST", "/bad-data")
    @requires_active
    async def bad_data(request):
        user.data["when"] = object()  # not JSON
        return {"ok": True}

    return lab


async def test_initial_url_hook_and_user_fields(tmp_path):
    async with serve_lab(tmp_path, lab=author_lab()) as lab, lab.browser() as browser:
        sid = await lab.start()
        async with browser.get(lab.url(f"/callback/{sid}"), allow_redirects=False) as r:
            assert r.headers["Location"] == "/welcome?locale=en"
        async with browser.get(lab.url("/me")) as r:
            me = await r.json()
        assert me["user"] == {"row": "JDOE@UNI"}
        assert me["session_id"] == sid and me["is_anonymous"] is False
        assert (me["experiment_name"], me["category_name"]) == ("blink", "Electronics")
        assert me["back"] == "https://lde.example/back"
        assert me["start_date"].endswith("+00:00")
        async with browser.get(lab.url("/plain")) as r:
            assert (r.status, await r.json()) == (201, {"who": "jdoe"})


async def test_logout_from_an_author_route(tmp_path):
    async with serve_lab(tmp_path, lab=author_lab()) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        async with browser.post(lab.url("/leave")) as r:
            assert await r.json() == {"left": True}
        # The session is ending (2) or over (-1), never active again.
        assert await lab.should_finish(sid) in (2, -1)
        await lab.settle()
        assert await lab.should_finish(sid) == -1
        assert (await lab.runtime.store.session(sid)).end_reason == "logged-out"


async def test_data_that_is_not_json_is_an_error_not_a_crash(tmp_path):
    async with serve_lab(tmp_path, lab=author_lab()) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        async with browser.post(lab.url("/bad-data")) as r:
            assert r.status == 500 and (await r.json())["error"] is True
        assert await lab.should_finish(sid) == 5


async def test_any_request_with_the_cookie_keeps_the_session_alive(tmp_path):
    """Autopoll: a page that only loads its own files is still a student at work."""
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        for _ in range(10):
            await lab.advance(10)
            async with browser.get(lab.url("/style.css")) as r:
                assert r.status == 200
        assert await lab.should_finish(sid) == 5


async def test_cross_site_posts_are_refused(tmp_path):
    async with serve_lab(tmp_path) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        evil = {"Origin": "https://evil.example"}
        async with browser.post(lab.url("/api/visit"), headers=evil) as r:
            assert r.status == 403 and "Cross-site" in (await r.json())["message"]
        async with browser.post(lab.url("/labrt/logout"), headers=evil) as r:
            assert r.status == 403
        own = {"Origin": lab.url("/").rstrip("/")}
        async with browser.post(lab.url("/api/visit"), headers=own) as r:
            assert await r.json() == {"visits": 1}
        assert await lab.should_finish(sid) == 5


def test_hooks_register_once():
    lab = Lab()

    @lab.on_start
    def first(client_data, server_data): ...

    with pytest.raises(ValueError, match="already registered"):
        lab.on_start(first)


def test_create_token_is_43_url_safe_characters():
    tokens = {Lab.create_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 43 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


def test_access_decorator_above_the_route_is_refused():
    lab = Lab()
    with pytest.raises(TypeError, match=r"must come below @lab\.route"):

        @requires_active
        @lab.route("POST", "/x")
        async def x(request): ...


def test_async_user_loader_is_refused():
    lab = Lab()
    with pytest.raises(TypeError, match="plain def"):

        @lab.user_loader
        async def load(username_unique): ...


async def test_the_anonymous_user_has_every_attribute_with_the_seeds_value(tmp_path):
    """As weblablib's AnonymousUser: ``locale`` None (a Babel locale selector falls back to
    its default on a public page), nothing raises for a name a student has."""
    from labrt.users import SessionUser

    names = sorted(n for n in dir(SessionUser) if not n.startswith("_"))
    lab_obj = Lab()

    @lab_obj.route("GET", "/public")
    def public(request):  # no access decorator: anyone, here nobody
        seen = {name: getattr(user, name) for name in names}
        for name in ("data", "request_client_data", "request_server_data"):
            seen[name] = dict(seen[name])
        try:
            user.data["lamp"] = True
        except TypeError:
            seen["data is read-only"] = True
        try:
            user.no_such_attribute  # noqa: B018
        except AttributeError:
            seen["unknown names raise"] = True
        return {"language": user.locale or "en", **seen}

    async with (
        serve_lab(tmp_path, lab=lab_obj) as lab,
        lab.browser() as browser,
        browser.get(lab.url("/public")) as r,
    ):
        assert r.status == 200, await r.text()
        seen = await r.json()
    empty = {"data": {}, "request_client_data": {}, "request_server_data": {}}
    flags = {"is_anonymous": True, "active": False, "time_left": 0}
    nothing = {name: None for name in names if name not in empty and name not in flags}
    assert "locale" in nothing and "username" in nothing and "full_name" in nothing
    assert seen == {
        "language": "en",
        **nothing,
        **empty,
        **flags,
        "data is read-only": True,
        "unknown names raise": True,
    }


def test_the_anonymous_user_cannot_be_given_data():
    with pytest.raises(TypeError, match="anonymous"):
        user.data = {"lamp": True}
    with pytest.raises(AttributeError):
        user.locale = "es"


def test_user_attributes_cannot_be_set_by_mistake():
    from labrt.users import ANONYMOUS

    with pytest.raises(AttributeError):
        user.active = True  # no session: the shared anonymous user stays anonymous
    assert ANONYMOUS.active is False


async def test_cross_site_opt_out_and_http_exception_text(tmp_path):
    lab_obj = Lab()

    @lab_obj.route("POST", "/hook", cross_site=True)
    async def hook(request):
        return {"ok": True}

    @lab_obj.route("GET", "/bad")
    async def bad(request):
        raise web.HTTPBadRequest(text="n must be 0 to 7")

    async with serve_lab(tmp_path, lab=lab_obj) as lab:
        evil = {"Origin": "https://elsewhere.example"}
        assert await lab.call("POST", "/hook", auth=None, headers=evil) == (200, {"ok": True})
        assert await lab.call("GET", "/bad", auth=None) == (
            400,
            {"error": True, "message": "n must be 0 to 7"},
        )


async def test_logout_during_dispose_returns_at_once(tmp_path):
    lab_obj = Lab()

    @lab_obj.on_dispose
    async def dispose():
        assert await logout() is True

    async with serve_lab(tmp_path, "[session]\ndispose_timeout = 600\n", lab=lab_obj) as lab:
        sid = await lab.start()
        async with asyncio.timeout(30):  # waiting for itself would last the full 600 s
            assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (
                200,
                {"message": "Deleted"},
            )
        assert (await lab.runtime.store.session(sid)).end_reason == "disposed-by-rlms"


def data_lab() -> Lab:
    lab = Lab()

    @lab.on_start
    async def start(client_data, server_data):
        return {"score": 7, "runs": [{"ok": True}]}

    @lab.route("GET", "/results")
    @requires_login
    async def results(request):
        return user.data  # read-only once the session has ended

    @lab.route("POST", "/echo")
    @requires_active
    async def echo(request):
        return {"got": await request.json()}

    @lab.route("POST", "/own-json")
    @requires_active
    async def own_json(request):
        import json

        return json.loads("not json, and the lab's own mistake")

    return lab


async def test_an_expired_users_read_only_data_can_be_returned(tmp_path):
    async with serve_lab(tmp_path, lab=data_lab()) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        assert await lab.call("DELETE", f"/ldl/sessions/{sid}") == (200, {"message": "Deleted"})
        async with browser.get(lab.url("/results")) as r:
            assert (r.status, await r.json()) == (200, {"score": 7, "runs": [{"ok": True}]})


async def test_a_body_that_request_json_cannot_read_is_the_clients_400(tmp_path):
    async with serve_lab(tmp_path, lab=data_lab()) as lab, lab.browser() as browser:
        sid = await lab.start()
        await lab.visit(browser, sid)
        for body, says in (
            (b"{not json", "not valid JSON"),
            (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
            (b"\xff\xfe", "not valid JSON"),
        ):
            async with browser.post(lab.url("/echo"), data=body) as r:
                answer = await r.json()
                assert (r.status, answer["error"]) == (400, True), answer
                assert says in answer["message"]
        async with browser.post(lab.url("/echo"), json={"a": 1}) as r:
            assert (r.status, await r.json()) == (200, {"got": {"a": 1}})
        # The lab's own JSON mistakes stay the lab's: a 500, with the traceback in its log.
        async with browser.post(lab.url("/own-json"), json={}) as r:
            assert r.status == 500

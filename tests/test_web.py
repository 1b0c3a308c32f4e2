"""What the web server adds around the page: listener cookies, addresses, fair queues."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from musicgen.listening import ListenerKeys
from musicgen.web import (
    LISTENER_COOKIE,
    FairQueue,
    ListenerCookie,
    client_address,
    listener_of,
)


def _app(keys: ListenerKeys, waiting: dict[str, list] | None = None) -> Starlette:
    async def join(request: Request) -> JSONResponse:  # stands in for Gradio's
        return JSONResponse({"joined": (await request.body()).decode()})

    async def page(request: Request) -> JSONResponse:
        return JSONResponse({"listener": listener_of(keys, request.headers.get("cookie"))})

    waiting = waiting or {}
    kinds = {0: "generate", 1: "results", 2: None, "generate": "generate"}
    return Starlette(routes=[Route("/gradio_api/queue/join", join, methods=["POST"]),
                             Route("/gradio_api/call/{name}", join, methods=["POST"]),
                             Route("/", page)],
                     middleware=[Middleware(ListenerCookie, keys=keys),
                                 Middleware(FairQueue, waiting=lambda kind: waiting.get(kind, []),
                                            kind_of=kinds.get,
                                            limits={"generate": 4, "results": 2},
                                            per_session={"generate": 1},
                                            per_address={"generate": 2})])


def test_a_browser_gets_one_signed_listener_cookie_and_keeps_it(tmp_path):
    keys = ListenerKeys(tmp_path / "listener.key")
    client = TestClient(_app(keys))
    first = client.get("/")
    cookie = first.cookies[LISTENER_COOKIE]
    assert keys.listener(cookie) is not None and first.json()["listener"] is None
    assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Lax" in first.headers[
        "set-cookie"]
    again = client.get("/")  # the jar sends it back: kept, not replaced
    assert "set-cookie" not in again.headers and again.json()["listener"] == keys.listener(
        cookie)
    forged = TestClient(_app(keys), cookies={LISTENER_COOKIE: "f" * 32 + "." + "0" * 32})
    answer = forged.get("/")
    assert answer.json()["listener"] is None and keys.listener(answer.cookies[LISTENER_COOKIE])
    assert listener_of(keys, 'broken="cookie; header') is None


def test_the_address_is_the_socket_s_unless_a_trusted_proxy_says_otherwise():
    headers = {"x-forwarded-for": "6.6.6.6, 203.0.113.9"}  # what the visitor wrote, the proxy
    assert client_address(headers, "10.0.0.1", proxies=0) == "10.0.0.1"
    assert client_address(headers, "10.0.0.1", proxies=1) == "203.0.113.9"
    assert client_address(headers, "10.0.0.1", proxies=2) == "6.6.6.6"
    assert client_address({}, "10.0.0.1", proxies=1) == "10.0.0.1"  # no header: the socket
    # One phone or home has a whole IPv6 /64 to pick addresses from: it counts as one.
    assert client_address({}, "2001:db8:1:2:aaaa::1") == client_address(
        {}, "2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_address({}, "::ffff:192.0.2.4") == "192.0.2.4"
    assert client_address({}, "testclient") == "testclient"  # not an address: as it is


def _event(session: str, address: str = "10.9.9.9"):
    return SimpleNamespace(session_hash=session, request=SimpleNamespace(
        headers={}, client=SimpleNamespace(host=address)))


TESTCLIENT = "testclient"  # the address Starlette's TestClient requests come from


@pytest.mark.parametrize(("fn_index", "session", "waiting", "refusal"), [
    (0, "s1", {}, None),
    (0, "s1", {"generate": [_event("s2"), _event("s3"), _event("s4")]}, None),
    (0, "s1", {"generate": [_event(f"s{k}") for k in range(2, 6)]}, "Many people are waiting"),
    (0, "s1", {"generate": [_event("s2", TESTCLIENT), _event("s3", TESTCLIENT)]},
     "from your network"),  # fresh session ids do not get round the address
    (0, "s1", {"generate": [_event("s1")]}, "still waiting"),  # one per session
    (1, "s1", {"results": [_event("s1")]}, None),  # no per-session limit for results
    (1, "s1", {"results": [_event("s2"), _event("s3")]}, "Many people are waiting"),
    (1, "s1", {"generate": [_event(f"s{k}") for k in range(9)]}, None),  # another kind's line
    (2, "s1", {"generate": [_event(f"s{k}") for k in range(9)]}, None),  # not limited
])
def test_a_kind_of_work_cannot_fill_the_queue_of_the_others(tmp_path, fn_index, session,
                                                            waiting, refusal):
    client = TestClient(_app(ListenerKeys(tmp_path / "listener.key"), waiting))
    body = {"fn_index": fn_index, "session_hash": session, "data": ["x" * 1000]}
    answer = client.post("/gradio_api/queue/join", json=body)
    if refusal is None:
        assert answer.status_code == 200
        assert json.loads(answer.json()["joined"]) == body  # passed on intact
    else:
        assert answer.status_code == 503 and refusal in answer.json()["detail"]


def test_the_api_s_call_route_waits_in_the_same_line(tmp_path):
    waiting = {"generate": [_event("s2", TESTCLIENT), _event("s3", TESTCLIENT)]}
    client = TestClient(_app(ListenerKeys(tmp_path / "listener.key"), waiting))
    answer = client.post("/gradio_api/call/generate", json={"data": [1]})
    assert answer.status_code == 503 and "from your network" in answer.json()["detail"]
    waiting["generate"] = []
    assert client.post("/gradio_api/call/generate", json={"data": [1]}).status_code == 200


def test_a_cookie_over_https_is_one_a_space_s_frame_can_send(tmp_path):
    keys = ListenerKeys(tmp_path / "listener.key")
    plain = TestClient(_app(keys)).get("/").headers["set-cookie"]
    framed = TestClient(_app(keys), base_url="https://testserver").get("/").headers[
        "set-cookie"]
    assert "SameSite=Lax" in plain and "Secure" not in plain
    assert "SameSite=None; Secure; Partitioned" in framed


def test_a_malformed_join_is_left_to_gradio(tmp_path):
    client = TestClient(_app(ListenerKeys(tmp_path / "listener.key")))
    for body in (b"not json", b'{"session_hash": "s1"}', b'{"fn_index": "zero"}',
                 b'{"fn_index": 1e999}'):
        answer = client.post("/gradio_api/queue/join", content=body)
        assert answer.status_code == 200 and answer.json()["joined"] == body.decode()

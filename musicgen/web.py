"""What the app's web server adds around the Gradio page: listener cookies, the listening
test's audio route, fair queues and compression.

    launch(..., app_kwargs=server_additions(studio, demo))

Gradio builds its FastAPI app from `app_kwargs`, so these go in as routes and
middleware given to its constructor: no Gradio internals are patched, except
that `FairQueue` reads the lengths of Gradio's waiting lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicgen.errors import UserError
from musicgen.listening import ListenerKeys, ListeningTest, serving_bytes

LISTENER_COOKIE = "musicgen_listener"
LISTENER_COOKIE_DAYS = 365
CLIP_PATH = "listen/clip/"  # relative to the page, so it works under any root path
# How many proxies in front of the app append to X-Forwarded-For (a Space has one).
PROXIES_ENV = "MUSICGEN_TRUSTED_PROXIES"


def trusted_proxies() -> int:
    """Proxies whose X-Forwarded-For entries are believed: $MUSICGEN_TRUSTED_PROXIES,
    else 1 on a Hugging Face Space (which sets SPACE_ID), else 0."""
    return int(os.environ.get(PROXIES_ENV, "1" if os.environ.get("SPACE_ID") else "0"))


def client_address(headers: Headers | dict, socket_host: str | None,
                   proxies: int | None = None) -> str | None:
    """The visitor's network address: the socket's peer, or behind `proxies` trusted
    proxies the entry the outermost one appended (the entries before it are the
    visitor's own words, and a script can write anything there)."""
    proxies = trusted_proxies() if proxies is None else proxies
    if proxies > 0:
        forwarded = [part.strip() for part in
                     (headers.get("x-forwarded-for") or "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return socket_host


def listener_of(keys: ListenerKeys, cookie_header: str | None) -> str | None:
    """The listener id in a request's Cookie header (None: missing or forged)."""
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header or "")
    except Exception:  # noqa: BLE001 - a malformed header is a missing cookie
        return None
    morsel = cookies.get(LISTENER_COOKIE)
    return keys.listener(morsel.value if morsel else None)


class ListenerCookie:
    """Gives every browser without a valid listener cookie a new signed one.

    A plain ASGI middleware (Starlette's BaseHTTPMiddleware would buffer
    Gradio's event streams).
    """

    def __init__(self, app: ASGIApp, keys: ListenerKeys):
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or listener_of(
                self.keys, Headers(scope=scope).get("cookie")) is not None:
            await self.app(scope, receive, send)
            return
        secure = "; Secure" if Headers(scope=scope).get("x-forwarded-proto") == "https" or (
            scope.get("scheme") == "https") else ""
        cookie = (f"{LISTENER_COOKIE}={self.keys.new_listener()}; Path=/; HttpOnly; "
                  f"SameSite=Lax; Max-Age={LISTENER_COOKIE_DAYS * 86400}{secure}")

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, with_cookie)


def clip_route(listening: ListeningTest) -> Route:
    """GET `CLIP_PATH<ticket>`: one file of a served pair, for its own listener only, its
    bytes different at every serving; a clip sent to the end is recorded as heard."""
    def serve(request: Request) -> Response:
        ticket = request.path_params["ticket"]
        listener = listener_of(listening.keys, request.headers.get("cookie"))
        try:
            path = listening.open_clip(listener, ticket)
        except UserError as error:
            return PlainTextResponse(f"{error}.", status_code=403)

        def body():
            yield from serving_bytes(path)
            # Reached only once the last block went out: a download cut short is not heard.
            listening.heard(ticket)

        # No byte ranges: the whole clip in one response, so "sent to the end" is known.
        return StreamingResponse(body(), media_type="audio/mpeg",
                                 headers={"Cache-Control": "no-store"})

    return Route("/" + CLIP_PATH + "{ticket}", serve, methods=["GET"])


class FairQueue:
    """Refuses a new job when its kind already has `limits[kind]` jobs waiting, or when
    the same browser session already has `per_session[kind]` of that kind waiting.

    Gradio keeps one queue length for all its events; without this, 65 calls of
    one cheap kind filled it and every other user got "Queue is full". Runs
    before Gradio's own join handler. `kind_of` maps a Gradio event index to a
    kind (None: not limited here); `waiting(kind)` lists that kind's waiting
    events. Per session rather than per address: a classroom shares one address.
    """

    def __init__(self, app: ASGIApp, waiting: Callable[[str], list],
                 kind_of: Callable[[int], str | None], limits: dict[str, int],
                 per_session: dict[str, int]):
        self.app, self.waiting, self.kind_of = app, waiting, kind_of
        self.limits, self.per_session = limits, per_session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/queue/join"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:  # the join body is a small JSON object
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._refusal(body)
        if refusal is not None:
            await JSONResponse({"detail": refusal}, status_code=503)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refusal(self, body: bytes) -> str | None:
        try:
            join = json.loads(body)
            kind = self.kind_of(int(join["fn_index"]))
        except (ValueError, KeyError, TypeError):
            return None  # Gradio answers a malformed join itself
        if kind is None:
            return None
        waiting = self.waiting(kind)
        if len(waiting) >= self.limits.get(kind, len(waiting) + 1):
            return (f"Many people are waiting for {kind} right now ({len(waiting)} ahead); "
                    "please try again in a minute.")
        mine = sum(getattr(event, "session_hash", None) == join.get("session_hash")
                   for event in waiting)
        if mine >= self.per_session.get(kind, mine + 1):
            return f"Your last {kind} request is still waiting; it comes first."
        return None


def server_additions(listening: ListeningTest, fair_queue: dict | None = None) -> dict:
    """`app_kwargs` for `gr.Blocks.launch`: the clip route and the middleware.

    Args:
        listening: The studio's listening test.
        fair_queue: `FairQueue`'s keyword arguments (None: no per-kind limits).
    """
    # The page is about 300 KB of HTML, JSON and scripts, a fifth of that compressed;
    # Starlette leaves event streams and audio as they are.
    middleware = [Middleware(GZipMiddleware, minimum_size=1024),
                  Middleware(ListenerCookie, keys=listening.keys)]
    if fair_queue is not None:
        middleware.append(Middleware(FairQueue, **fair_queue))
    return {"routes": [clip_route(listening)], "middleware": middleware}

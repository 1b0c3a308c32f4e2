"""What the app's web server adds around the Gradio page: listener cookies, the listening
test's audio route, the keyboard's piano samples, fair queues, the upload limit and
compression.

    launch(..., app_kwargs=server_additions(studio, demo))

Gradio builds its FastAPI app from `app_kwargs`, so these go in as routes and
middleware given to its constructor: no Gradio internals are patched, except
that `FairQueue` reads the lengths of Gradio's waiting lists.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Callable
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicgen.errors import UserError
from musicgen.listening import ListenerKeys, ListeningTest
from musicgen.sample_bank import SampleBank

LISTENER_COOKIE = "musicgen_listener"
LISTENER_COOKIE_DAYS = 365
CLIP_PATH = "listen/clip/"  # relative to the page, so it works under any root path
PIANO_PATH = "piano/"  # the keyboard's samples: PIANO_PATH + "bank.mp3" and "bank.json"
# How many proxies in front of the app append to X-Forwarded-For (a Space has one).
PROXIES_ENV = "MUSICGEN_TRUSTED_PROXIES"
CHUNK = 65536


@functools.cache  # read once (`server_additions` does it at launch), not in every request
def trusted_proxies() -> int:
    """Proxies whose X-Forwarded-For entries are believed: $MUSICGEN_TRUSTED_PROXIES,
    else 1 on a Hugging Face Space (which sets SPACE_ID), else 0.

    Raises:
        UserError: The variable is not a whole number from 0 to 10.
    """
    value = os.environ.get(PROXIES_ENV, "1" if os.environ.get("SPACE_ID") else "0")
    if not value.strip().isdigit() or int(value) > 10:
        raise UserError(f"{PROXIES_ENV} is the number of proxies in front of the app (0 to "
                        f"10), not {value!r}")
    return int(value)


def client_address(headers: Headers | dict, socket_host: str | None,
                   proxies: int | None = None) -> str | None:
    """The visitor's network address: the socket's peer, or behind `proxies` trusted
    proxies the entry the outermost one appended (the entries before it are the
    visitor's own words, and a script can write anything there); IPv6 by its /64."""
    proxies = trusted_proxies() if proxies is None else proxies
    address = socket_host
    if proxies > 0:
        forwarded = [part.strip() for part in
                     (headers.get("x-forwarded-for") or "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    return _network(address)


def _network(address: str | None) -> str | None:
    """An IPv6 address as its /64 (one home or phone has a whole /64 to pick from);
    anything else as it is."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


def listener_of(keys: ListenerKeys, cookie_header: str | None) -> str | None:
    """The listener id in a request's Cookie header (None: missing or forged)."""
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header or "")
    except Exception:  # noqa: BLE001 - a malformed header is a missing cookie
        return None
    morsel = cookies.get(LISTENER_COOKIE)
    return keys.listener(morsel.value if morsel else None)


class UploadLimit:
    """Refuses an upload larger than `max_bytes` before a byte of it is read, in our words.

    The page's own check (Gradio's `max_file_size`) answers in Gradio's words, and
    without one a file reached `musicgen.prompt` only after the whole of it was sent.
    Browsers and gradio_client send a Content-Length with every upload; one without
    is refused too, or a stream could run on without end. The page shows the text
    after "HTTP 413: ".
    """

    SLACK = 64 * 1024  # the multipart form around the file; a file this close gets prompt.py's

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").rstrip("/").endswith("/upload")):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        limit = self.max_bytes // 2**20
        if length is None or not length.isdigit():
            refusal = PlainTextResponse(f"Send the file with its length (seed MIDI files are "
                                        f"limited to {limit} MB).", status_code=411)
        elif int(length) > self.max_bytes + self.SLACK:
            refusal = PlainTextResponse(f"That file is {int(length) / 2**20:.1f} MB; seed MIDI "
                                        f"files are limited to {limit} MB.", status_code=413)
        else:
            await self.app(scope, receive, send)
            return
        await refusal(scope, receive, send)


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
        # Over https (a Space) the page runs in huggingface.co's frame, where a Lax
        # cookie is not sent: None, Secure, and partitioned per embedding site.
        https = Headers(scope=scope).get("x-forwarded-proto") == "https" or (
            scope.get("scheme") == "https")
        site = "SameSite=None; Secure; Partitioned" if https else "SameSite=Lax"
        cookie = (f"{LISTENER_COOKIE}={self.keys.new_listener()}; Path=/; HttpOnly; {site}; "
                  f"Max-Age={LISTENER_COOKIE_DAYS * 86400}")

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, with_cookie)


def clip_route(listening: ListeningTest) -> Route:
    """GET `CLIP_PATH<ticket>`: one file of a served pair, for its own listener only, in
    bytes of its own (`serving_bytes`), whole or by byte range (Safari asks in ranges);
    once every byte of it has gone out, the clip counts as heard."""
    def serve(request: Request) -> Response:
        if request.method != "GET":  # HEAD would "send" the body without a byte going out
            return PlainTextResponse("GET only.", status_code=405)
        ticket = request.path_params["ticket"]
        listener = listener_of(listening.keys, request.headers.get("cookie"))
        try:
            data = listening.serving(listener, ticket)
        except UserError as error:
            return PlainTextResponse(f"{error}.", status_code=403)
        total = len(data)
        span = byte_range(request.headers.get("range"), total)
        if span is None:
            return PlainTextResponse("That byte range is not in the file.", status_code=416,
                                     headers={"Content-Range": f"bytes */{total}"})
        start, end = span
        headers = {"Cache-Control": "no-store", "Accept-Ranges": "bytes",
                   "Content-Length": str(end - start)}
        if request.headers.get("range"):
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"

        def body():
            for at in range(start, end, CHUNK):
                yield data[at:min(end, at + CHUNK)]
            # Reached only once the last block went out: a download cut short is not heard.
            listening.sent(ticket, start, end, total)

        return StreamingResponse(body(), status_code=206 if "Content-Range" in headers else 200,
                                 media_type="audio/mpeg", headers=headers)

    return Route("/" + CLIP_PATH + "{ticket}", serve, methods=["GET"])


def sample_bank_routes(bank: Callable[[], SampleBank | None],
                       made: Callable[[], bool]) -> list[Route]:
    """GET `PIANO_PATH` bank.mp3 and bank.json: the keyboard's samples (`musicgen.sample_bank`).

    `bank()` gives the files once they are made; until `made()` (the app makes
    them in the background as it starts) the page hears 503 and asks again;
    where they cannot be made (no FluidSynth), 404.
    """
    def serve(request: Request) -> Response:
        kind = request.path_params["kind"]
        files = bank()
        if kind not in ("mp3", "json"):
            return PlainTextResponse("Not found.", status_code=404)
        if files is None:
            return PlainTextResponse("There are no piano samples on this server.",
                                     status_code=404 if made() else 503)
        path = files.audio if kind == "mp3" else files.manifest
        # The names hold no version, so a day's caching at most outlives a new soundfont.
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    return [Route("/" + PIANO_PATH + "bank.{kind:str}", serve, methods=["GET"])]


def byte_range(header: str | None, total: int) -> tuple[int, int] | None:
    """The bytes a Range header asks for, as (start, end exclusive): the whole file
    without one (or with one this route does not take: several ranges); None if it lies
    outside the file."""
    unit, _, ranges = (header or "").partition("=")
    if unit.strip() != "bytes" or "," in ranges:
        return 0, total
    first, _, last = ranges.strip().partition("-")
    try:
        if not first:  # the last N bytes
            start, end = max(0, total - int(last)), total
        else:
            start, end = int(first), min(total, int(last) + 1) if last else total
    except ValueError:
        return 0, total
    return (start, end) if 0 <= start < end else None


class FairQueue:
    """Refuses a new job when its kind already has `limits[kind]` jobs waiting, or when
    the same browser session, or the same network address, already has
    `per_session[kind]` or `per_address[kind]` of that kind waiting.

    Gradio keeps one queue length for all its events; without this, 65 calls of
    one cheap kind filled it and every other user got "Queue is full". Runs
    before Gradio's own handlers of the routes that queue a job: the page's
    `/queue/join` (which names the event by index) and the API's `/call/<name>`
    (by name). `kind_of` maps either to a kind (None: not limited here);
    `waiting(kind)` lists that kind's waiting events. A script picks its own
    session ids, so the per-address limit is the one it meets; it is generous,
    since a classroom shares one address.
    """

    def __init__(self, app: ASGIApp, waiting: Callable[[str], list],
                 kind_of: Callable[[int | str], str | None], limits: dict[str, int],
                 per_session: dict[str, int], per_address: dict[str, int]):
        self.app, self.waiting, self.kind_of = app, waiting, kind_of
        self.limits, self.per_session, self.per_address = limits, per_session, per_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").rstrip("/")
        queued = scope["type"] == "http" and scope.get("method") == "POST" and (
            path.endswith("/queue/join") or "/call/" in path)
        if not queued:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:  # the body is a small JSON object
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._refusal(path, body, scope)
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

    def _refusal(self, path: str, body: bytes, scope: Scope) -> str | None:
        try:
            join = json.loads(body) if path.endswith("/queue/join") else {}
            kind = self.kind_of(int(join["fn_index"]) if join else path.rsplit("/", 1)[-1])
        except (ValueError, KeyError, TypeError, OverflowError):
            return None  # Gradio answers a malformed request itself
        if kind is None:
            return None
        waiting = self.waiting(kind)
        if len(waiting) >= self.limits.get(kind, len(waiting) + 1):
            return (f"Many people are waiting for {kind} right now ({len(waiting)} ahead); "
                    "please try again in a minute.")
        session = join.get("session_hash")
        if session is not None and sum(getattr(event, "session_hash", None) == session
                                       for event in waiting) >= self.per_session.get(kind, 1e9):
            return f"Your last {kind} request is still waiting; it comes first."
        address = client_address(Headers(scope=scope), (scope.get("client") or (None,))[0])
        if sum(_address_of(event) == address for event in waiting) >= self.per_address.get(
                kind, 1e9):
            return (f"Many {kind} requests from your network are waiting already; please try "
                    "again in a minute.")
        return None


def _address_of(event) -> str | None:
    """The network address a waiting Gradio event came from."""
    request = getattr(event, "request", None)
    if request is None:
        return None
    return client_address(request.headers, getattr(request.client, "host", None))


def server_additions(listening: ListeningTest, fair_queue: dict | None = None,
                     routes: list[Route] = (), max_upload_bytes: int | None = None) -> dict:
    """`app_kwargs` for `gr.Blocks.launch`: the clip route and the middleware.

    Args:
        listening: The studio's listening test.
        fair_queue: `FairQueue`'s keyword arguments (None: no per-kind limits).
        routes: More routes (`sample_bank_routes`).
        max_upload_bytes: The largest file taken (`UploadLimit`; None: no limit here).
    """
    # The page is about 300 KB of HTML, JSON and scripts, a fifth of that compressed;
    # Starlette leaves event streams and audio as they are.
    trusted_proxies()  # a bad setting stops the launch, in plain words
    middleware = [Middleware(GZipMiddleware, minimum_size=1024),
                  Middleware(ListenerCookie, keys=listening.keys)]
    if fair_queue is not None:
        middleware.append(Middleware(FairQueue, **fair_queue))
    if max_upload_bytes is not None:
        middleware.append(Middleware(UploadLimit, max_bytes=max_upload_bytes))
    return {"routes": [clip_route(listening), *routes], "middleware": middleware}

"""Tests for musicgen.download against a local HTTP server; nothing leaves 127.0.0.1.

The served zip is a tiny stand-in built here with MAESTRO's layout, not real MAESTRO data.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from musicgen.download import (
    MAESTRO_CSV_MEMBER,
    MAESTRO_DIR_NAME,
    MAESTRO_ZIP_NAME,
    DownloadError,
    download,
    download_maestro,
)

CSV_TEXT = (
    "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
    "Nobody,Test Piece,train,2004,2004/a.midi,2004/a.wav,1.0\n"
)
MIDI_BYTES = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"


def make_zip(extra: dict[str, bytes] | None = None) -> bytes:
    """A zip with MAESTRO's layout (csv + one year folder), plus any `extra` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{MAESTRO_DIR_NAME}/2004/a.midi", MIDI_BYTES)
        for name, data in (extra or {}).items():
            archive.writestr(zipfile.ZipInfo(name), data)
        archive.writestr(MAESTRO_CSV_MEMBER, CSV_TEXT)
    return buffer.getvalue()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileServer:
    """What the test server serves and what it saw."""

    payload: bytes
    url: str = ""
    honour_range: bool = True
    cut_after: int | None = None  # drop the connection after this many body bytes, once
    requests: list[dict[str, str]] = field(default_factory=list)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves FileServer.payload at /<MAESTRO_ZIP_NAME>, honouring `Range: bytes=N-`."""

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        state: FileServer = self.server.state  # type: ignore[attr-defined]
        state.requests.append(dict(self.headers))
        if self.path != f"/{MAESTRO_ZIP_NAME}":
            self.send_error(404)
            return

        body, start = state.payload, 0
        range_header = self.headers.get("Range")
        if range_header and state.honour_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()

        data = body[start:]
        if state.cut_after is not None:
            # Promise the full length but close early, as a dropped connection does.
            data, state.cut_after = data[: state.cut_after], None
            self.close_connection = True
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep pytest output clean


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours proxy variables; the local server must be reached directly.
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Callable[[bytes], FileServer]:
    """Start a server on 127.0.0.1 (free port) for `payload`; stopped when the test ends."""

    def start(payload: bytes) -> FileServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
        state = FileServer(payload, url=f"http://127.0.0.1:{httpd.server_port}/{MAESTRO_ZIP_NAME}")
        httpd.state = state  # type: ignore[attr-defined]
        # A short poll interval lets shutdown() return at once instead of after 0.5 s.
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)

        request.addfinalizer(stop)
        return state

    return start


def closed_port_url() -> str:
    # Bind then release a port, so nothing listens there when the client connects.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{MAESTRO_ZIP_NAME}"


def test_download_maestro_fetches_verifies_and_unpacks(serve, tmp_path: Path) -> None:
    payload = make_zip()
    server = serve(payload)

    root = download_maestro(tmp_path / "data", server.url, sha256_of(payload), progress=False)

    assert root == tmp_path / "data" / MAESTRO_DIR_NAME
    assert (root / f"{MAESTRO_DIR_NAME}.csv").read_text() == CSV_TEXT
    assert (root / "2004" / "a.midi").read_bytes() == MIDI_BYTES
    assert (tmp_path / "data" / MAESTRO_ZIP_NAME).read_bytes() == payload
    assert not (tmp_path / "data" / f"{MAESTRO_ZIP_NAME}.part").exists()


def test_download_resumes_after_dropped_connection(serve, tmp_path: Path) -> None:
    payload = make_zip(extra={f"{MAESTRO_DIR_NAME}/2004/b.midi": bytes(range(256)) * 64})
    server = serve(payload)
    server.cut_after = 1000
    dest = tmp_path / MAESTRO_ZIP_NAME
    part = tmp_path / f"{MAESTRO_ZIP_NAME}.part"

    with pytest.raises(DownloadError, match="resume") as failure:
        download(server.url, dest, sha256_of(payload), progress=False)
    assert "1,000 bytes" in str(failure.value)
    assert part.stat().st_size == 1000
    assert not dest.exists()

    assert download(server.url, dest, sha256_of(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert not part.exists()
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == "bytes=1000-"


def test_download_starts_over_when_server_ignores_range(serve, tmp_path: Path) -> None:
    payload = make_zip()
    server = serve(payload)
    server.honour_range = False
    dest = tmp_path / MAESTRO_ZIP_NAME
    (tmp_path / f"{MAESTRO_ZIP_NAME}.part").write_bytes(b"stale bytes from another file")

    download(server.url, dest, sha256_of(payload), progress=False)

    assert server.requests[0]["Range"] == "bytes=29-"
    assert dest.read_bytes() == payload


def test_download_finishes_a_part_that_is_already_complete(serve, tmp_path: Path) -> None:
    payload = make_zip()
    server = serve(payload)
    dest = tmp_path / MAESTRO_ZIP_NAME
    (tmp_path / f"{MAESTRO_ZIP_NAME}.part").write_bytes(payload)

    download(server.url, dest, sha256_of(payload), progress=False)

    assert dest.read_bytes() == payload
    assert len(server.requests) == 1  # answered 416, nothing more to fetch


def test_wrong_sha256_deletes_the_download(serve, tmp_path: Path) -> None:
    server = serve(make_zip())
    dest = tmp_path / MAESTRO_ZIP_NAME

    with pytest.raises(DownloadError, match="checksum .* did not match"):
        download(server.url, dest, "0" * 64, progress=False)

    assert not dest.exists()
    assert not (tmp_path / f"{MAESTRO_ZIP_NAME}.part").exists()


def test_unreachable_server_gives_a_plain_message(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as failure:
        download_maestro(tmp_path, closed_port_url(), sha256=None, progress=False)

    message = str(failure.value)
    assert "offline" in message
    assert "could not be reached" in message
    assert "run the command again" in message
    assert not (tmp_path / MAESTRO_ZIP_NAME).exists()


def test_http_error_becomes_download_error(serve, tmp_path: Path) -> None:
    server = serve(make_zip())
    missing = server.url.replace(MAESTRO_ZIP_NAME, "nothing-here.zip")

    with pytest.raises(DownloadError, match="HTTP 404"):
        download(missing, tmp_path / "x.zip", sha256=None, progress=False)


def test_existing_verified_file_makes_no_request(serve, tmp_path: Path) -> None:
    payload = make_zip()
    server = serve(payload)
    (tmp_path / MAESTRO_ZIP_NAME).write_bytes(payload)

    root = download_maestro(tmp_path, server.url, sha256_of(payload), progress=False)

    assert server.requests == []
    assert (root / f"{MAESTRO_DIR_NAME}.csv").is_file()
    # Unpacked already: a second call needs neither the network nor the zip.
    (tmp_path / MAESTRO_ZIP_NAME).unlink()
    assert download_maestro(tmp_path, closed_port_url(), progress=False) == root


@pytest.mark.parametrize("evil_name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_zip_slip_member_is_rejected(tmp_path: Path, evil_name: str) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    payload = make_zip(extra={evil_name: b"gotcha"})
    (dest / MAESTRO_ZIP_NAME).write_bytes(payload)

    with pytest.raises(DownloadError, match="unsafe path"):
        download_maestro(dest, closed_port_url(), sha256_of(payload), progress=False)

    assert not (dest / MAESTRO_DIR_NAME).exists()  # rejected before anything was written
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_zip_is_reported_and_deleted(tmp_path: Path) -> None:
    zip_path = tmp_path / MAESTRO_ZIP_NAME
    zip_path.write_bytes(b"this is not a zip archive")

    with pytest.raises(DownloadError, match="not a valid zip"):
        download_maestro(tmp_path, closed_port_url(), sha256=None, progress=False)

    assert not zip_path.exists()


def test_zip_without_maestro_csv_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("something-else/readme.txt", "hello")
    (tmp_path / MAESTRO_ZIP_NAME).write_bytes(buffer.getvalue())

    with pytest.raises(DownloadError, match="not the MAESTRO v3.0.0 MIDI archive"):
        download_maestro(tmp_path, closed_port_url(), sha256=None, progress=False)

"""Fetch the MAESTRO v3.0.0 MIDI corpus: a resumable, checksummed download and a safe unpack.

`download` is a small general tool: it streams a URL into `<file>.part`, resumes that part
with an HTTP Range request when a previous run was interrupted, checks the sha256 and only
then renames the part to its final name. `download_maestro` uses it to fetch the MIDI-only
MAESTRO zip and unpacks it so that the corpus ends up in `<dest>/maestro-v3.0.0/`, the folder
`musicgen.corpus` reads (it takes the official splits from `maestro-v3.0.0.csv`).

Only the standard library does the networking, so this module works wherever musicgen is
installed. Network, checksum and archive failures reach the caller as a `DownloadError` with
a plain-words message (what went wrong, what was kept, what to run next), which the CLI can
print instead of a traceback.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

from tqdm import tqdm

from musicgen import __version__

MAESTRO_MIDI_URL = (
    "https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip"
)
# sha256 of the MIDI-only v3.0.0 zip (58,416,533 bytes). MusPy pins this value
# (muspy/datasets/maestro.py, MAESTRODatasetV3) and independent projects quote the same one
# from the dataset page, https://magenta.tensorflow.org/datasets/maestro. Pinning it means a
# changed or tampered upstream file fails loudly instead of becoming a different corpus.
MAESTRO_MIDI_SHA256 = "70470ee253295c8d2c71e6d9d4a815189e35c89624b76d22fce5a019d5dde12c"
MAESTRO_ZIP_NAME = "maestro-v3.0.0-midi.zip"
MAESTRO_DIR_NAME = "maestro-v3.0.0"
MAESTRO_CSV_MEMBER = f"{MAESTRO_DIR_NAME}/{MAESTRO_DIR_NAME}.csv"

_CHUNK_BYTES = 1 << 20
_USER_AGENT = f"musicgen/{__version__} (+python urllib)"

# What a dropped or refused connection looks like from urllib and http.client. Disk errors
# (plain OSError) are deliberately absent: "you seem to be offline" would mislead there.
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)


class DownloadError(RuntimeError):
    """A download or unpack failed; the message says what happened and what to do next."""


def download(
    url: str,
    dest_file: Path,
    sha256: str | None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download `url` to `dest_file`, resuming an interrupted earlier attempt.

    Bytes go to `dest_file` + ".part" first. When that part file exists, the request asks
    only for the missing bytes (`Range: bytes=N-`) and appends them if the server answers
    206; a server that answers 200 instead sends the whole file, which replaces the part.
    The part file is renamed to `dest_file` only after the checksum matched, so a file at
    `dest_file` is always complete.

    Args:
        url: Where to fetch the file from (http or https).
        dest_file: Final path of the file; its folder is created if needed.
        sha256: Expected hex digest of the whole file, or None to skip the check. If
            `dest_file` already exists and matches (or `sha256` is None), it is returned
            without touching the network; an existing file that does not match is replaced.
        progress: Show a tqdm progress bar on stderr.
        timeout: Seconds to wait for the server to connect or to send the next bytes.

    Returns:
        `dest_file`, complete and (when `sha256` was given) verified.

    Raises:
        DownloadError: the server could not be reached, the connection dropped (the part
            file is kept so that running again resumes), the server answered with an
            HTTP error, or the checksum did not match (the part file is deleted).
    """
    dest_file = Path(dest_file)
    expected = sha256.lower() if sha256 else None
    if dest_file.is_file():
        if expected is None or _file_sha256(dest_file) == expected:
            return dest_file
        # A stale or damaged copy; fetching afresh is the only way to get a trusted one.
        dest_file.unlink()

    dest_file.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest_file)
    try:
        _fetch(url, part, progress=progress, timeout=timeout)
    except _NETWORK_ERRORS as error:
        raise DownloadError(_network_failure_message(url, part, error)) from error

    if expected is not None:
        actual = _file_sha256(part)
        if actual != expected:
            part.unlink()
            raise DownloadError(
                f"The checksum of the file downloaded from {url} did not match: expected "
                f"sha256 {expected}, got {actual}. The file is damaged or is not the one "
                "expected, so it was deleted; run the command again to download it afresh."
            )
    part.replace(dest_file)
    return dest_file


def download_maestro(
    dest: str | os.PathLike = "data",
    url: str = MAESTRO_MIDI_URL,
    sha256: str | None = MAESTRO_MIDI_SHA256,
    progress: bool = True,
) -> Path:
    """Download the MAESTRO v3.0.0 MIDI zip into `dest` and unpack it there.

    Nothing is fetched or unpacked when `dest/maestro-v3.0.0/maestro-v3.0.0.csv` already
    exists: the csv is extracted last, so its presence marks a finished unpack. The zip
    itself is kept at `dest/maestro-v3.0.0-midi.zip` so a later unpack needs no network.

    The archive is checked before anything is written: every member path must stay inside
    `dest` (no absolute paths, no `..`, which would let a crafted zip write anywhere), and
    the MAESTRO csv must be present. When `sha256` is None the zip's own CRCs are tested
    too (`zipfile.testzip`), which is the best available check without a published hash.

    Args:
        dest: Folder that receives the zip and the `maestro-v3.0.0/` corpus folder.
        url: Where to fetch the zip; the official Magenta bucket by default.
        sha256: Expected sha256 of the zip (the published one by default), or None.
        progress: Show a progress bar on stderr while downloading.

    Returns:
        The `dest/maestro-v3.0.0` folder, holding the csv and the per-year MIDI folders.

    Raises:
        DownloadError: the download failed (see `download`), or the zip is corrupt,
            unsafe, or not the MAESTRO v3.0.0 MIDI archive.
    """
    dest = Path(dest)
    corpus_dir = dest / MAESTRO_DIR_NAME
    if (dest / MAESTRO_CSV_MEMBER).is_file():
        return corpus_dir

    zip_path = download(url, dest / MAESTRO_ZIP_NAME, sha256, progress=progress)
    _unpack(zip_path, dest, test_crcs=sha256 is None)
    return corpus_dir


def _part_path(dest_file: Path) -> Path:
    return dest_file.with_suffix(dest_file.suffix + ".part")


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Bring `part` up to the whole file, appending to what an earlier run left there."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or offset == 0:
            raise
        # Range Not Satisfiable: either the part already holds every byte (an earlier run
        # stopped between the last byte and the checksum) or it is longer than the file.
        _, total = _parse_content_range(error.headers.get("Content-Range"))
        if total == offset:
            return
        part.unlink()
        offset = 0
        response = _open(url, offset, timeout)

    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise DownloadError(
                    f"The server for {url} sent bytes from {start} when asked for {offset}; "
                    "the partial download was deleted. Run the command again to start over."
                )
            mode = "ab"
        else:
            # The server ignored the Range header and is sending the whole file.
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None

        received = offset
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))

    # http.client returns a short body without complaint when the peer closes early, so
    # the length is the only sign that the connection dropped.
    if total is not None and received < total:
        raise ConnectionError(f"the connection closed after {received:,} of {total:,} bytes")


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _parse_content_range(header: str | None) -> tuple[int | None, int | None]:
    """(start, total) of `Content-Range: bytes START-END/TOTAL` or `bytes */TOTAL`.

    Either value is None where the header is missing, uses `*`, or cannot be read.
    """
    if not header or "/" not in header:
        return None, None
    byte_range, _, total = header.removeprefix("bytes").strip().partition("/")
    start = byte_range.split("-")[0]
    return (
        int(start) if start.isdigit() else None,
        int(total) if total.isdigit() else None,
    )


def _network_failure_message(url: str, part: Path, error: BaseException) -> str:
    host = urlsplit(url).netloc or url
    kept = part.stat().st_size if part.is_file() else 0
    if kept:
        resume = (
            f"The {kept:,} bytes downloaded so far are kept in {part}; "
            "run the command again to resume from there."
        )
    else:
        resume = "Nothing was saved yet; run the command again once the server is reachable."

    if isinstance(error, urllib.error.HTTPError):
        return (
            f"The server {host} could not provide {url}: HTTP {error.code} {error.reason}. "
            f"Check the URL, or wait if the server is only temporarily unavailable. {resume}"
        )
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return (
        f"Could not download {url}: {reason}. This machine seems to be offline, or the "
        f"server {host} could not be reached or dropped the connection. {resume}"
    )


def _unpack(zip_path: Path, dest: Path, test_crcs: bool) -> None:
    """Extract the MAESTRO zip into `dest`, refusing unsafe archives before writing anything."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in members:
                _check_member_path(member.filename)
            names = {member.filename for member in members}
            if MAESTRO_CSV_MEMBER not in names:
                raise DownloadError(
                    f"{zip_path} does not contain {MAESTRO_CSV_MEMBER}, so it is not the "
                    "MAESTRO v3.0.0 MIDI archive. Delete it and check the download URL."
                )
            if test_crcs:
                damaged = archive.testzip()
                if damaged is not None:
                    raise zipfile.BadZipFile(f"member {damaged} fails its CRC check")

            # The csv goes last: download_maestro treats its presence as "unpack finished",
            # so an unpack interrupted halfway is redone on the next run.
            for member in members:
                if member.filename != MAESTRO_CSV_MEMBER:
                    archive.extract(member, dest)
            archive.extract(MAESTRO_CSV_MEMBER, dest)
    except (zipfile.BadZipFile, EOFError) as error:
        # A corrupt zip can never unpack; deleting it lets the next run fetch a good copy.
        zip_path.unlink(missing_ok=True)
        raise DownloadError(
            f"{zip_path} is not a valid zip archive ({error}). It was deleted; run the "
            "command again to download it afresh."
        ) from error


def _check_member_path(name: str) -> None:
    """Reject a zip member that would land outside the target folder (zip-slip)."""
    posix_name = name.replace("\\", "/")
    if (
        posix_name.startswith("/")
        or PureWindowsPath(name).drive
        or ".." in PurePosixPath(posix_name).parts
    ):
        raise DownloadError(
            f"The archive contains an unsafe path {name!r} (absolute, or climbing out with "
            "'..'); refusing to unpack it. The zip is not a genuine MAESTRO archive."
        )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()

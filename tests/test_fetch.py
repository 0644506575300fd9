"""Tests for catdog.fetch: mirror link/copy, download from a local HTTP server, verification."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from catdog import fetch, paths
from conftest import PET_IMAGES
from catdog.fetch import FetchError, fetch_data

SHARED_PETS = PET_IMAGES  # found through $CATDOG_SHARED, like the code
ARCHIVE = "kagglecatsanddogs_5340.zip"


# ---------------------------------------------------------------------------- fixtures


def _real_jpegs() -> dict[str, bytes]:
    """Two cat and two dog JPEGs: real photos from the shared folder, or small generated ones."""
    photos = {}
    for cls, colour in (("Cat", (200, 120, 40)), ("Dog", (40, 90, 200))):
        for number in (1, 2):
            source = SHARED_PETS / cls / f"{number}.jpg"
            if source.is_file():
                photos[f"{cls}/{number}.jpg"] = source.read_bytes()
            else:
                buf = io.BytesIO()
                # distinct bytes per photo: tests find a member by its bytes inside the archive
                Image.new("RGB", (32, 32), tuple(c + 20 * number for c in colour)).save(buf, "JPEG")
                photos[f"{cls}/{number}.jpg"] = buf.getvalue()
    return photos


PHOTOS = _real_jpegs()


def make_zip(top: str = "PetImages", compression: int = zipfile.ZIP_DEFLATED, macos: bool = False) -> bytes:
    """A tiny archive shaped like Microsoft's: PetImages/{Cat,Dog}/ with a Thumbs.db, plus a readme."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        if macos:
            zf.writestr("__MACOSX/PetImages/Cat/._1.jpg", b"resource fork")
        zf.writestr("readme[1].txt", "Cats and dogs\n")
        for name, data in PHOTOS.items():
            zf.writestr(f"{top}/{name}", data)
        zf.writestr(f"{top}/Cat/Thumbs.db", b"\xd0\xcf\x11\xe0 not an image")
    return buf.getvalue()


class Server:
    """A local HTTP server with one file; it can truncate its response and counts requests."""

    def __init__(self, body: bytes):
        self.body = body
        self.truncate = False
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                outer.hits += 1
                if self.path != f"/files/{ARCHIVE}":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body[: len(outer.body) // 2] if outer.truncate else outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/files/{ARCHIVE}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every test away from ~/.cache, the shared mirror and the repo's data folder."""
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CATDOG_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.delenv("CATDOG_DATA_MIRROR", raising=False)
    monkeypatch.setenv("CATDOG_DATA_DIR", str(tmp_path / "default-data" / "PetImages"))


@pytest.fixture
def server():
    srv = Server(make_zip())
    yield srv
    srv.close()


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A tiny PetImages mirror folder."""
    root = tmp_path / "mirror" / "PetImages"
    for name, data in PHOTOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime, to prove it was not modified."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def cache() -> Path:
    return paths.cache_dir()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/{ARCHIVE}"


# ---------------------------------------------------------------------------- download


def test_download_verifies_and_extracts_petimages(tmp_path, server):
    dest = tmp_path / "data" / "PetImages"
    assert fetch_data(dest, url=server.url) == dest
    got = files(dest)
    assert {k: v for k, v in got.items() if k.endswith(".jpg")} == PHOTOS
    assert "Cat/Thumbs.db" in got  # extracted as is; the scanner skips it
    assert "readme[1].txt" not in got and not (dest.parent / "readme[1].txt").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["PetImages"]  # no temp folders left
    assert (cache() / ARCHIVE).read_bytes() == server.body
    assert not list(cache().glob("*.part"))
    assert server.hits == 1


def test_default_dest_is_data_dir(server):
    dest = fetch_data(url=server.url)
    assert dest == paths.default_data_dir()
    assert fetch.holds_images(dest)


def test_cached_archive_is_reused(tmp_path, server):
    fetch_data(tmp_path / "a" / "PetImages", url=server.url)
    fetch_data(tmp_path / "b" / "PetImages", url=server.url)
    assert server.hits == 1
    assert files(tmp_path / "b" / "PetImages") == files(tmp_path / "a" / "PetImages")


def test_manually_downloaded_archive_is_used_offline(tmp_path):
    cache().joinpath(ARCHIVE).write_bytes(make_zip())
    dest = fetch_data(tmp_path / "PetImages", url=closed_port_url())
    assert fetch.holds_images(dest)


def test_damaged_cached_archive_is_downloaded_again(tmp_path, server):
    cache().joinpath(ARCHIVE).write_bytes(b"<html>captive portal</html>")
    dest = fetch_data(tmp_path / "PetImages", url=server.url)
    assert fetch.holds_images(dest)
    assert server.hits == 1
    assert (cache() / ARCHIVE).read_bytes() == server.body


def test_truncated_download_is_rejected(tmp_path, server):
    server.truncate = True
    dest = tmp_path / "PetImages"
    with pytest.raises(FetchError, match=r"incomplete.*received [\d,]+ of [\d,]+ bytes") as err:
        fetch_data(dest, url=server.url)
    assert server.url in str(err.value)
    assert not dest.exists() and not list(cache().iterdir())  # no archive, no .part


def test_corrupted_member_fails_crc_check(tmp_path):
    body = bytearray(make_zip(compression=zipfile.ZIP_STORED))
    offset = bytes(body).find(PHOTOS["Dog/2.jpg"]) + len(PHOTOS["Dog/2.jpg"]) // 2
    body[offset] ^= 0xFF
    srv = Server(bytes(body))
    try:
        with pytest.raises(FetchError, match=r"bad CRC-32 for member 'PetImages/Dog/2.jpg'"):
            fetch_data(tmp_path / "PetImages", url=srv.url)
    finally:
        srv.close()
    assert not (tmp_path / "PetImages").exists() and not list(cache().iterdir())


def test_not_a_zip_is_rejected(tmp_path):
    srv = Server(b"<html>Sorry, this download is no longer available</html>")
    try:
        with pytest.raises(FetchError, match="not a valid zip archive"):
            fetch_data(tmp_path / "PetImages", url=srv.url)
    finally:
        srv.close()


def test_wrong_sha256_is_rejected(tmp_path, server):
    with pytest.raises(FetchError, match="sha256 checksum mismatch"):
        fetch_data(tmp_path / "PetImages", url=server.url, expected_sha256="0" * 64)
    assert not (tmp_path / "PetImages").exists() and not list(cache().iterdir())


def test_right_sha256_is_accepted(tmp_path, server):
    digest = hashlib.sha256(server.body).hexdigest().upper()
    assert fetch.holds_images(fetch_data(tmp_path / "PetImages", url=server.url, expected_sha256=digest))


def test_archive_without_petimages_is_rejected(tmp_path):
    srv = Server(make_zip(top="Animals"))
    try:
        with pytest.raises(FetchError, match="no PetImages/ folder"):
            fetch_data(tmp_path / "PetImages", url=srv.url)
    finally:
        srv.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no half-filled dest, no temp folder


def test_nested_petimages_folder_is_found(tmp_path):
    srv = Server(make_zip(top="kagglecatsanddogs/PetImages", macos=True))
    try:
        dest = fetch_data(tmp_path / "PetImages", url=srv.url)
    finally:
        srv.close()
    assert {k: v for k, v in files(dest).items() if k.endswith(".jpg")} == PHOTOS


def test_network_failure_says_what_to_do(tmp_path):
    url = closed_port_url()
    with pytest.raises(FetchError) as err:
        fetch_data(tmp_path / "PetImages", url=url)
    message = str(err.value)
    assert url in message and "CATDOG_DATA_MIRROR" in message and str(cache() / ARCHIVE) in message


def test_http_error_is_reported(tmp_path, server):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_data(tmp_path / "PetImages", url=server.url.replace(ARCHIVE, "missing.zip"))


# ---------------------------------------------------------------------------- mirror


def test_link_mode_symlinks_the_mirror(tmp_path, mirror, server, caplog):
    before = snapshot(mirror)
    dest = tmp_path / "data" / "PetImages"
    with caplog.at_level(logging.INFO, logger="catdog.fetch"):
        fetch_data(dest, mirror=mirror, url=server.url)
    assert dest.is_symlink() and dest.resolve() == mirror.resolve()
    assert files(dest) == PHOTOS
    assert "linked" in caplog.text and str(mirror) in caplog.text
    assert snapshot(mirror) == before
    assert server.hits == 0


def test_copy_mode_copies_the_mirror(tmp_path, mirror):
    before = snapshot(mirror)
    dest = tmp_path / "data" / "PetImages"
    fetch_data(dest, mirror=mirror, mode="copy")
    assert not dest.is_symlink() and files(dest) == PHOTOS
    (dest / "Cat" / "1.jpg").unlink()  # the copy is independent of the mirror
    assert snapshot(mirror) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["PetImages"]


def test_mirror_from_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("CATDOG_DATA_MIRROR", str(mirror))
    dest = fetch_data(tmp_path / "PetImages")
    assert dest.is_symlink() and dest.resolve() == mirror.resolve()


def test_download_mode_ignores_the_mirror(tmp_path, mirror, server):
    dest = fetch_data(tmp_path / "PetImages", mirror=mirror, mode="download", url=server.url)
    assert not dest.is_symlink() and server.hits == 1


def test_mirror_without_images_is_rejected(tmp_path):
    (tmp_path / "empty-mirror" / "Cat").mkdir(parents=True)
    with pytest.raises(FetchError, match="no Cat/ and Dog/"):
        fetch_data(tmp_path / "PetImages", mirror=tmp_path / "empty-mirror")


def test_bad_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        fetch_data(tmp_path / "PetImages", mode="move")


# ---------------------------------------------------------------------------- existing dest


def test_existing_dest_is_left_alone(tmp_path, mirror, server):
    dest = tmp_path / "PetImages"
    for name in ("cats/a.jpg", "DOGS/b.png", "notes.txt"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(b"x")
    before = snapshot(dest)
    assert fetch_data(dest, mirror=mirror, url=server.url) == dest
    assert not dest.is_symlink() and snapshot(dest) == before and server.hits == 0


def test_force_replaces_a_linked_dest_without_touching_the_mirror(tmp_path, mirror):
    before = snapshot(mirror)
    dest = fetch_data(tmp_path / "PetImages", mirror=mirror)
    assert dest.is_symlink()
    fetch_data(dest, mirror=mirror, mode="copy", force=True)
    assert not dest.is_symlink() and files(dest) == PHOTOS
    assert snapshot(mirror) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PetImages", "mirror"]


def test_force_replaces_an_existing_dataset(tmp_path, mirror):
    dest = tmp_path / "PetImages"
    (dest / "Cat").mkdir(parents=True)
    (dest / "Dog").mkdir()
    (dest / "Cat" / "old.jpg").write_bytes(b"old")
    (dest / "Dog" / "old.jpg").write_bytes(b"old")
    fetch_data(dest, mirror=mirror, force=True)
    assert dest.is_symlink() and files(dest) == PHOTOS


def test_empty_dest_folder_is_filled(tmp_path, mirror):
    dest = tmp_path / "PetImages"
    dest.mkdir()
    assert fetch_data(dest, mirror=mirror).is_symlink()


def test_broken_symlink_dest_is_replaced(tmp_path, mirror):
    dest = tmp_path / "PetImages"
    dest.symlink_to(tmp_path / "gone", target_is_directory=True)
    fetch_data(dest, mirror=mirror, mode="copy")
    assert not dest.is_symlink() and files(dest) == PHOTOS


def test_unrelated_folder_is_never_replaced(tmp_path, mirror):
    dest = tmp_path / "Pictures"
    dest.mkdir()
    (dest / "holiday.jpg").write_bytes(b"x")
    for force in (False, True):
        with pytest.raises(FetchError, match="not replacing"):
            fetch_data(dest, mirror=mirror, force=force)
    assert (dest / "holiday.jpg").read_bytes() == b"x"


def test_incomplete_dataset_needs_force(tmp_path, mirror):
    dest = tmp_path / "PetImages"
    (dest / "Cat").mkdir(parents=True)
    (dest / "Cat" / "1.jpg").write_bytes(b"x")
    with pytest.raises(FetchError, match="force"):
        fetch_data(dest, mirror=mirror)
    assert fetch_data(dest, mirror=mirror, force=True).is_symlink()


def test_dest_overlapping_the_mirror_is_refused(tmp_path, mirror):
    before = snapshot(mirror)
    for dest in (mirror, mirror.parent, mirror / "Cat"):
        with pytest.raises(FetchError, match="overlaps the mirror"):
            fetch_data(dest, mirror=mirror, mode="copy", force=True)
    assert snapshot(mirror) == before

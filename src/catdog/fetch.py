"""Getting the PetImages data: link or copy a local mirror, or download Microsoft's archive.

:func:`fetch_data` fills ``data/PetImages`` (or any ``dest``) in the cheapest way available:

1. ``dest`` already holds ``Cat/`` and ``Dog/`` images: nothing to do.
2. A local mirror exists (``mirror=`` or ``$CATDOG_DATA_MIRROR`` or ``../shared/data/PetImages``):
   ``dest`` becomes a symlink to it (``mode="link"``) or a copy of it (``mode="copy"``).
3. Otherwise (or with ``mode="download"``) the archive at ``url`` is downloaded into the
   cache folder, verified, and its ``PetImages/`` folder extracted to ``dest``.

``dest`` is only ever replaced in one step (new content is prepared beside it, then
renamed into place), so an interrupted fetch never leaves a half-filled data folder.
The mirror and any folder that does not look like a PetImages folder are never modified.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from catdog import paths
from catdog.images import is_image_name
from catdog.runs import show_progress

MS_URL = (
    "https://download.microsoft.com/download/3/E/1/"
    "3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
MODES = ("link", "copy", "download")
CHUNK_SIZE = 1 << 20  # 1 MiB
TIMEOUT_S = 60
CLASS_FOLDERS = {"cat": ("cat", "cats"), "dog": ("dog", "dogs")}

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """The data could not be fetched; the message says which file or URL and why."""


# ---------------------------------------------------------------------------- public API


def fetch_data(
    dest: Path | None = None,
    *,
    mirror: Path | None = None,
    url: str = MS_URL,
    mode: str = "link",
    expected_sha256: str | None = None,
    force: bool = False,
) -> Path:
    """Make ``dest`` (default ``paths.default_data_dir()``) a PetImages folder and return it.

    ``mode`` is ``"link"`` (symlink ``dest`` to the mirror), ``"copy"`` (copy the mirror)
    or ``"download"`` (ignore any mirror and download ``url``). Without a usable mirror,
    ``"link"`` and ``"copy"`` download too. ``force`` replaces a ``dest`` that already
    holds images. Raises :class:`FetchError` on any failure.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    dest = Path(dest).expanduser() if dest is not None else paths.default_data_dir()
    if holds_images(dest) and not force:
        log.info("%s already holds images; nothing to do", _show(dest))
        return dest
    source = _find_mirror(mirror) if mode != "download" else None
    _check_replaceable(dest, force, [m for m in (source, mirror, paths.data_mirror()) if m is not None])

    if source is not None:
        if mode == "link":
            _install(_make_link(source, dest), dest)
            log.info("linked %s -> %s", _show(dest), source)
        else:
            _install(_copy_tree(source, dest), dest)
            log.info("copied %s -> %s", source, _show(dest))
        return dest

    archive = download_archive(url, expected_sha256=expected_sha256)
    _install(_extract_petimages(archive, dest), dest)
    log.info("extracted %s -> %s", archive, _show(dest))
    return dest


def holds_images(path: Path) -> bool:
    """True if ``path`` has a cat folder and a dog folder, each with at least one image."""
    if not path.is_dir():
        return False
    found = set()
    for child in path.iterdir():
        for label, names in CLASS_FOLDERS.items():
            if child.name.lower() in names and child.is_dir() and _has_image(child):
                found.add(label)
    return found == set(CLASS_FOLDERS)


def download_archive(url: str = MS_URL, *, expected_sha256: str | None = None) -> Path:
    """Return the verified archive for ``url`` in ``paths.cache_dir()``, downloading it if needed.

    A cached archive (from an earlier run, or put there by hand) is re-verified and reused;
    a damaged one is downloaded again.
    """
    target = paths.cache_dir() / _archive_name(url)
    if target.is_file():
        try:
            verify_archive(target, expected_sha256=expected_sha256)
            log.info("using cached archive %s", target)
            return target
        except FetchError as exc:
            log.warning("%s; downloading it again", exc)
            target.unlink()

    part = target.with_name(target.name + ".part")
    try:
        sha256 = _download(url, part, target)
        verify_archive(part, expected_sha256=expected_sha256, sha256=sha256)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    log.info("downloaded %s (sha256 %s)", target, sha256)
    return target


def verify_archive(path: Path, *, expected_sha256: str | None = None, sha256: str | None = None) -> None:
    """Check ``path`` against ``expected_sha256`` (if given) and every member's CRC-32.

    Microsoft publishes no checksum for its archive, so the zip's own CRC-32s are the
    integrity check we always have; pass ``expected_sha256`` to pin an exact file.
    """
    if expected_sha256:
        actual = sha256 or paths.file_sha256(path)
        if actual.lower() != expected_sha256.strip().lower():
            raise FetchError(f"{path}: sha256 checksum mismatch (expected {expected_sha256}, got {actual})")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise FetchError(f"{path}: not a valid zip archive ({exc})") from None
    if bad is not None:
        raise FetchError(f"{path}: corrupted archive, bad CRC-32 for member {bad!r}")


# ---------------------------------------------------------------------------- download


def _download(url: str, part: Path, target: Path) -> str:
    """Stream ``url`` into ``part`` with a progress bar; return the sha256 of the bytes received."""
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "catdog-fetch"})
    log.info("downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, part.open("wb") as out:
            expected = _content_length(response)
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                      disable=not show_progress()) as bar:
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(
            f"could not download {url} ({_reason(exc)}). Set CATDOG_DATA_MIRROR to a local "
            f"PetImages folder, or download the archive manually to {target} and run again."
        ) from None
    if expected is not None and received != expected:
        raise FetchError(
            f"download of {url} is incomplete: received {received:,} of {expected:,} bytes "
            f"(Content-Length); run again, or download it manually to {target}"
        )
    return digest.hexdigest()


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """The response's Content-Length, or None if missing or malformed."""
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _reason(exc: BaseException) -> str:
    """A short description of a network error."""
    reason = getattr(exc, "reason", None)
    if getattr(exc, "code", None) is not None:
        return f"HTTP {exc.code} {reason or ''}".strip()  # type: ignore[attr-defined]
    return str(reason or exc) or type(exc).__name__


def _archive_name(url: str) -> str:
    """The file name to cache ``url`` under (its last path component)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "catdog-data.zip"


# ---------------------------------------------------------------------------- extraction


def _petimages_prefix(names: list[str], archive: Path) -> str:
    """The member prefix of the archive's ``PetImages/`` folder (at any depth)."""
    for name in names:
        parts = name.split("/")
        if parts[0] == "__MACOSX":  # resource forks added by macOS zip tools
            continue
        for i, part in enumerate(parts[:-1]):
            if part.lower() == "petimages":
                return "/".join(parts[: i + 1]) + "/"
    raise FetchError(f"{archive}: archive has no PetImages/ folder; is it the Cats and Dogs archive?")


def _extract_petimages(archive: Path, dest: Path) -> Path:
    """Extract the archive's ``PetImages/`` into a temp folder beside ``dest``; return it."""
    holder = _temp_holder(dest, "extract")
    try:
        raw = Path(tempfile.mkdtemp(dir=holder))
        with zipfile.ZipFile(archive) as zf:
            prefix = _petimages_prefix(zf.namelist(), archive)
            members = [m for m in zf.namelist() if m.startswith(prefix)]
            log.info("extracting %d files from %s", len(members), archive)
            zf.extractall(raw, members=members)  # extractall drops '..' and absolute paths
        extracted = (raw / prefix).rename(holder / dest.name)
        shutil.rmtree(raw)
        return extracted
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        shutil.rmtree(holder, ignore_errors=True)
        raise FetchError(f"could not extract {archive} to {dest.parent}: {exc}") from None
    except BaseException:  # FetchError, KeyboardInterrupt: leave nothing behind
        shutil.rmtree(holder, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------- mirror and dest


def _find_mirror(mirror: Path | None) -> Path | None:
    """The mirror to use: ``mirror`` (must hold images) or ``paths.data_mirror()`` if it does."""
    if mirror is not None:
        mirror = Path(mirror).expanduser().resolve()
        if not holds_images(mirror):
            raise FetchError(f"mirror {mirror} has no Cat/ and Dog/ folders with images")
        return mirror
    found = paths.data_mirror()
    if found is not None and not holds_images(found):
        log.warning("ignoring mirror %s: no Cat/ and Dog/ folders with images", found)
        return None
    return found.resolve() if found is not None else None


def _make_link(source: Path, dest: Path) -> Path:
    """Create a symlink to ``source`` in a temp folder beside ``dest``; return it."""
    link = _temp_holder(dest, "link") / dest.name
    try:
        link.symlink_to(source, target_is_directory=True)
    except OSError as exc:
        shutil.rmtree(link.parent, ignore_errors=True)
        raise FetchError(f"could not symlink {dest} -> {source} ({exc}); use mode='copy'") from None
    return link


def _copy_tree(source: Path, dest: Path) -> Path:
    """Copy ``source`` into a temp folder beside ``dest``; return the copy."""
    copy = _temp_holder(dest, "copy") / dest.name
    try:
        shutil.copytree(source, copy)
    except BaseException as exc:
        shutil.rmtree(copy.parent, ignore_errors=True)
        if isinstance(exc, OSError):  # shutil.Error (a list of failed files) is an OSError too
            raise FetchError(f"could not copy {source} to {dest}: {exc}") from None
        raise
    return copy


def _check_replaceable(dest: Path, force: bool, mirrors: list[Path]) -> None:
    """Raise :class:`FetchError` unless ``dest`` may be (re)placed.

    Allowed: a missing or empty ``dest``, a symlink, or (with ``force``) a folder with a
    Cat/ or Dog/ folder. Never allowed: a ``dest`` that is, holds or lies inside a mirror.
    """
    location = dest.parent.resolve() / dest.name  # where dest itself lives (a link is not followed)
    for mirror in mirrors:
        mirror = Path(mirror).expanduser().resolve()
        if location == mirror or mirror in location.parents or location in mirror.parents:
            raise FetchError(f"{dest} overlaps the mirror {mirror}, which is never modified; choose another dest")
    if dest.is_symlink() or not dest.exists():
        return
    if not dest.is_dir():
        raise FetchError(f"{dest} exists and is not a folder; remove it or choose another dest")
    entries = {child.name.lower() for child in dest.iterdir()}
    class_names = {name for names in CLASS_FOLDERS.values() for name in names}
    if entries and not entries & class_names:
        raise FetchError(f"{dest} is not empty and has no Cat/ or Dog/ folder; not replacing it")
    if entries and not force:
        raise FetchError(f"{dest} lacks images in Cat/ or Dog/; pass force=True (--force) to replace it")


def _install(new: Path, dest: Path) -> None:
    """Put ``new`` (inside a temp folder beside ``dest``) in place of ``dest`` in one rename.

    An existing ``dest`` is moved aside first and deleted only once ``new`` is in place;
    a symlink is unlinked, never followed, so a linked mirror is never touched.
    """
    old = None
    try:
        if dest.is_symlink() or dest.exists():
            aside = _temp_holder(dest, "old") / dest.name
            dest.rename(aside)
            old = aside
        try:
            new.rename(dest)
        except OSError:
            if old is not None:
                old.rename(dest)
                old = None
            raise
    except OSError as exc:
        raise FetchError(f"could not move {new} to {dest}: {exc}") from None
    finally:
        shutil.rmtree(new.parent, ignore_errors=True)
    if old is not None:
        _remove(old)


def _temp_holder(dest: Path, what: str) -> Path:
    """A new empty hidden folder beside ``dest`` (same filesystem, so renames are atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}-{what}-", dir=dest.parent))


def _remove(path: Path) -> None:
    """Delete a symlink (never its target) or a folder tree, then its temp holder folder."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(path.parent, ignore_errors=True)


def _has_image(folder: Path) -> bool:
    """True if ``folder`` directly contains at least one image file."""
    return any(is_image_name(child) and child.is_file() for child in folder.iterdir())


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)

"""Default locations (repo, shared mirror, data, weights, cache) and run folders.

Every default can be overridden by an environment variable, so a user can point
catdog at their own data without editing code:

- ``CATDOG_SHARED``       folder holding ``data/PetImages`` and ``weights/`` (default ``../shared``)
- ``CATDOG_DATA_MIRROR``  local copy of PetImages used by ``catdog data fetch``
- ``CATDOG_DATA_DIR``     where the dataset lives (default ``data/PetImages``)
- ``CATDOG_WEIGHTS_DIR``  folder with ImageNet ``.h5`` weight files
- ``CATDOG_MODEL``        model loaded by ``catdog.load_model()`` with no argument
- ``CATDOG_CACHE_DIR``    scan and feature caches (default ``~/.cache/catdog``)
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL_NAME = "catdog.keras"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def shared_dir() -> Path | None:
    """The shared folder beside the repo (``$CATDOG_SHARED`` or ``../shared``), if it exists."""
    path = _env_path("CATDOG_SHARED") or REPO_ROOT.parent / "shared"
    return path if path.is_dir() else None


def data_mirror() -> Path | None:
    """A local PetImages copy to fill ``data/`` from, if one exists."""
    path = _env_path("CATDOG_DATA_MIRROR")
    if path is None and shared_dir() is not None:
        path = shared_dir() / "data" / "PetImages"
    return path if path is not None and path.is_dir() else None


def default_data_dir() -> Path:
    """Where the dataset is expected: ``$CATDOG_DATA_DIR`` or ``data/PetImages``."""
    return _env_path("CATDOG_DATA_DIR") or REPO_ROOT / "data" / "PetImages"


def weights_dir() -> Path | None:
    """Folder with local ImageNet weight files (``$CATDOG_WEIGHTS_DIR`` or ``../shared/weights``)."""
    path = _env_path("CATDOG_WEIGHTS_DIR")
    if path is None and shared_dir() is not None:
        path = shared_dir() / "weights"
    return path if path is not None and path.is_dir() else None


def default_model_path() -> Path:
    """The shipped model: ``$CATDOG_MODEL`` or ``models/catdog.keras``."""
    return _env_path("CATDOG_MODEL") or REPO_ROOT / "models" / SHIPPED_MODEL_NAME


def cache_dir() -> Path:
    """Cache folder for scan results and features (created on demand)."""
    path = _env_path("CATDOG_CACHE_DIR") or Path.home() / ".cache" / "catdog"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_dir(parent: str | Path, name: str | None = None) -> Path:
    """Create and return a fresh folder under ``parent``; never reuses an existing one.

    The folder is named ``name`` (or a UTC timestamp); if that exists, ``-2``, ``-3``…
    is appended, so an earlier run is never overwritten.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^\w.-]+", "-", name) if name else time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for i in range(1, 10_000):
        candidate = parent / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {parent}")


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` all at once: a reader sees the old file or the new one, never half.

    Written to a temporary file in the same folder, then renamed over ``path`` (``os.replace``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_new(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, which must not exist yet (FileExistsError otherwise): never overwrites."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (ties exports and "neither" detectors to one model file).

    Loading a model checks its detector, its export and its runners against this hash, so the digest is
    remembered per file version (resolved path, inode, size, modification and change times): a file that is
    rewritten or replaced is read again.
    """
    path = Path(path).resolve()
    st = path.stat()
    return _sha256_of_version(path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@functools.lru_cache(maxsize=64)
def _sha256_of_version(path: Path, version: tuple[int, int, int, int]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

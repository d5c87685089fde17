"""An exported program (``weights = "model.pt2"``, from ``torch.export.save``): a model that
carries its own architecture and runs operators, not modules. It is opened only after every
pickled part of it has been checked to hold tensors only."""

from __future__ import annotations

import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import WeightsError
from pipeline.models.checkpoints import EXPORTED, file_identity
from pipeline.models.sources.base import (
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    register_source,
)
from pipeline.models.sources.state_dict_file import describe_file

if TYPE_CHECKING:
    from torch import nn


class ExportedProgram(ModelSource):
    """A ``.pt2`` file, whatever ``[model] arch`` says; ImageNet's preprocessing unless the
    config sets its own."""

    name = "exported-program"
    weights_help = "a .pt2 exported program"
    modules_refusal = ("an exported program ({weights}), which runs operators, not modules. "
                       "Save a state dict (torch.save(model.state_dict(), ...)) and set "
                       "[model] arch, or")

    def weights_missing(self, weights: str) -> bool:
        return not Path(weights).expanduser().is_file()

    def takes(self, arch: str, weights: str) -> bool:
        return weights.endswith(EXPORTED)

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        """``file:<name>:sha256=<hex>``: the program is its own architecture."""
        return file_identity(weights, "")

    def recorded_arch(self, arch: str) -> str:
        return "exported"

    def load(self, request: LoadRequest) -> LoadedNetwork:
        import torch

        path = request.path
        if not path.is_file():
            raise WeightsError(f"Expected an exported program at {path}, but there is none.")
        check_exported(path)
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise WeightsError(f"Expected a torch.export.save() program at {path}, but it "
                               f"could not be loaded ({type(exc).__name__}: "
                               f"{str(exc)[:200]}).") from None
        _check_program_input(program, path, request.crop)
        net = _exported_module_class()(program.module())
        return LoadedNetwork(net, self.weights_id(request.arch, request.weights, request.seed),
                             False)


#: Parts of a ``.pt2`` archive that are loaded with pickle (``torch.export.load`` falls back
#: to ``weights_only=False`` on them): each must load with ``weights_only=True`` first.
_PICKLED = (".pt", ".pkl", ".pickle")


def check_exported(path: Path) -> None:
    """Refuse a ``.pt2`` that ``torch.export.load`` would unpickle code from.

    ``torch.export.load`` reads the graph from JSON and the weights as raw tensors, but it
    unpickles three kinds of parts without ``weights_only``: weights or constants saved with
    ``use_pickle``, custom and opaque objects among the constants, and any ``.pt`` part
    (sample inputs, legacy weights) that fails to load with ``weights_only=True`` (it then
    retries without). This opens the archive first and refuses each of those.

    Raises
    ------
    WeightsError
        When the file is no zip archive, or a part of it would be unpickled.
    """
    import torch

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        raise WeightsError(f"Expected a torch.export.save() archive at {path}, but it is not "
                           f"one: {describe_file(path)}.") from None
    with archive:
        for name in archive.namelist():
            data = archive.read(name)
            if name.endswith("_config.json") and "/data/" in name:
                config = json.loads(data).get("config", {})
                for entry, meta in config.items():
                    kind = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or kind.startswith(("custom_obj", "opaque")):
                        raise WeightsError(
                            f"Expected {path} to hold tensors only, but its entry {entry!r} "
                            "would be unpickled, and unpickling can run code; it is refused. "
                            "Export a model whose weights and constants are plain tensors.")
            elif name.endswith(_PICKLED):
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except Exception:
                    raise WeightsError(
                        f"Expected {path} to hold tensors only, but its part {name} holds "
                        "other objects, and unpickling them can run code; it is refused. "
                        "Export the model again with torch.export.save().") from None


_HOW_TO_EXPORT = (
    "Export with a dynamic batch dimension: batch = torch.export.Dim('batch', min=1); "
    "program = torch.export.export(model.eval(), (torch.randn(2, 3, {crop}, {crop}),), "
    "dynamic_shapes=({{0: batch}},)); torch.export.save(program, 'model.pt2')")


def _check_program_input(program: Any, path: Path, crop: int) -> None:
    """One image input ``(batch, 3, crop, crop)`` whose batch size is free."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in set(program.graph_signature.user_inputs)]
    how = _HOW_TO_EXPORT.format(crop=crop)
    if len(inputs) != 1:
        raise WeightsError(f"Expected {path} to take one image batch, got {len(inputs)} "
                           f"inputs. {how}")
    shape = tuple(inputs[0].meta["val"].shape)
    if len(shape) != 4:
        raise WeightsError(f"Expected {path} to take (batch, 3, H, W) images, got shape "
                           f"{shape}. {how}")
    if isinstance(shape[0], int):
        raise WeightsError(f"Expected {path} to take any batch size, but it was exported for "
                           f"batches of {shape[0]} only. {how}")
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and (h, w) != (crop, crop):
        raise WeightsError(f"Expected {path} to take {crop}x{crop} images (the crop), but it "
                           f"was exported for {h}x{w}: set [dataset] crop = {h} (and resize "
                           "to match), or export it for the crop.")


@cache
def _exported_module_class() -> type[nn.Module]:
    """The module class that wraps a program; made on first use, as it subclasses torch's
    ``nn.Module`` and this module stays importable without torch."""
    import torch
    from torch import nn

    class _ExportedModule(nn.Module):
        """An exported program as a module: eval mode is baked into it (``.eval()`` and
        ``.train()`` are refused by the program, so they are no-ops here)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

        def train(self, mode: bool = True) -> _ExportedModule:
            return self

    return _ExportedModule


register_source(ExportedProgram())

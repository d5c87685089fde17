"""The evidence model (``weights = "evidence"``): a ResNet18 trained here on the ``evidence``
dataset, so that the right answer of every explanation is known. Training and its cache are
in :mod:`pipeline.models.sources.evidence_training`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import WeightsError
from pipeline.models.sources.base import (
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    register_source,
)
from pipeline.models.torchvision_table import DEFAULT_ARCH

if TYPE_CHECKING:
    from torch import nn

KEYWORD = "evidence"


class EvidenceModel(ModelSource):
    """The ResNet18 of the evidence dataset, trained on first use and cached."""

    name = "evidence"
    weight_names = (KEYWORD,)
    weights_help = KEYWORD
    single_images_refusal = ("the evidence model belongs to its dataset; run "
                             "`xai run --dataset evidence` instead.")
    trained_on_dataset = True

    def takes(self, arch: str, weights: str) -> bool:
        return weights == KEYWORD

    def hashed_class_count(self) -> int:
        from pipeline.data.evidence_dataset import SHAPES

        return len(SHAPES)

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        """``evidence:resnet18-<key>``, the key of the training settings."""
        return f"evidence:resnet18-{evidence_key}"

    def load(self, request: LoadRequest) -> LoadedNetwork:
        """The cached model of the request's training settings (default
        ``TrainSettings(seed=seed)``), trained first when the cache has none."""
        if request.arch != DEFAULT_ARCH:
            raise WeightsError(f"Expected arch = resnet18 for the evidence model (a ResNet18 "
                               f"trained here), got {request.arch!r}.")
        from pipeline.data.evidence_dataset import TrainSettings
        from pipeline.models.sources.evidence_training import load_evidence_model

        settings = request.evidence or TrainSettings(seed=request.seed)
        net, report = load_evidence_model(settings, request.progress)
        return LoadedNetwork(net, self.weights_id(request.arch, request.weights, request.seed,
                                                  settings.key()), False, report=report)

    def class_names(self, net: nn.Module, request: LoadRequest
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The dataset's shapes."""
        from pipeline.data.evidence_dataset import SHAPES

        return SHAPES, ()


register_source(EvidenceModel())

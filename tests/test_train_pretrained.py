from __future__ import annotations

import pytest
import torch

from reidcompress.errors import ArchitectureError
from reidcompress.models.checkpoint import save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.train.pretrained import build_model


def test_pretrained_trunk_is_loaded_and_head_is_new(tmp_path) -> None:
    src = ReIDNet(ReIDConfig(arch="tiny", num_classes=0, input_size=(64, 32)))
    with torch.no_grad():
        src.bnneck.weight.fill_(3.0)
    save_model(tmp_path / "src.pt", src)
    model = build_model("tiny", 9, (64, 32), pretrained=tmp_path / "src.pt")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.bnneck.weight, torch.ones(128))
    assert model.classifier is not None and model.classifier.out_features == 9


def test_pretrained_arch_or_shape_mismatch_is_refused(tmp_path) -> None:
    save_model(tmp_path / "r18.pt", ReIDNet(ReIDConfig(arch="resnet18", input_size=(64, 32))))
    with pytest.raises(ArchitectureError, match="'resnet18' trunk"):
        build_model("tiny", 3, (64, 32), pretrained=tmp_path / "r18.pt")
    pruned = ReIDNet(
        ReIDConfig(arch="tiny", input_size=(64, 32)),
        shapes={
            "backbone.layer1.0.conv1.weight": (8, 16, 3, 3),
            "backbone.layer1.0.bn1.weight": (8,),
            "backbone.layer1.0.conv2.weight": (16, 8, 3, 3),
        },
    )
    save_model(tmp_path / "pruned.pt", pruned)
    with pytest.raises(ArchitectureError, match="do not fit"):
        build_model("tiny", 3, (64, 32), pretrained=tmp_path / "pruned.pt")


def test_pretrained_osnet_brings_its_fc_layer(tmp_path) -> None:
    src = ReIDNet(ReIDConfig(arch="osnet_tiny", neck="none", num_classes=1000, input_size=(64, 32)))
    with torch.no_grad():
        src.fc[0].weight.fill_(0.5)  # as torchreid's ImageNet OSNet: a trained fc before a 1000-way classifier
    save_model(tmp_path / "imagenet.pt", src)
    model = build_model("osnet_tiny", 7, (64, 32), pretrained=tmp_path / "imagenet.pt")
    assert torch.equal(model.fc[0].weight, src.fc[0].weight)
    assert model.classifier is not None and model.classifier.out_features == 7

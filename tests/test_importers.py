"""Importers: state dicts in the exact key layouts of torchvision, torchreid and fast-reid.

Each reference forward below is written from the framework's own eval-mode forward (torchreid
``ResNet.forward``; fast-reid ``Baseline`` -> ``EmbeddingHead``), independently of the mapping code.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from reidcompress.errors import ArchitectureError, CheckpointError
from reidcompress.models.checkpoint import load_model
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.reid import IMAGENET_MEAN, IMAGENET_STD
from reidcompress.testing import randomise_norms

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _randomised_resnet18(last_stride: int = 2) -> torchvision.models.ResNet:
    net = torchvision.models.resnet18()
    net.layer4[0].conv1.stride = (last_stride, last_stride)
    net.layer4[0].downsample[0].stride = (last_stride, last_stride)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def _trunk(net: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b).min().item()


def test_torchvision_import_keeps_backbone(tmp_path) -> None:
    net = _randomised_resnet18(last_stride=2)
    src = tmp_path / "resnet18-imagenet.pth"
    torch.save(net.state_dict(), src)  # torchvision's layout: a plain state dict with fc.*
    model = import_checkpoint(src, "torchvision", "resnet18", tmp_path / "out.pt", last_stride=2)
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        ref = _trunk(net, (x - MEAN) / STD).mean((2, 3))
        ours = model.forward_train(x)[0]  # pooled feature, before the fresh BNNeck
    assert torch.allclose(ours, ref, atol=1e-5)
    assert model.config.neck == "bnneck" and model.classifier is None
    assert load_model(tmp_path / "out.pt").config.last_stride == 2


def test_torchreid_import_same_embeddings(tmp_path) -> None:
    net = _randomised_resnet18(last_stride=2)
    classifier = nn.Linear(512, 9)
    state = {f"module.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({f"module.classifier.{k}": v for k, v in classifier.state_dict().items()})
    src = tmp_path / "model.pth.tar-60"
    torch.save({"state_dict": state, "epoch": 60, "rank1": 0.8, "optimizer": {"state": {}, "param_groups": []}}, src)
    model = import_checkpoint(src, "torchreid", "resnet18", tmp_path / "tr.pt")
    x = torch.rand(3, 3, 128, 64)
    with torch.no_grad():
        # torchreid ResNet.forward in eval: v = global_avgpool(featuremaps(x)).view(N, -1)
        ref = _trunk(net, (x - MEAN) / STD).mean((2, 3))
        ours = load_model(tmp_path / "tr.pt")(x)
    assert _cos(ours, ref) > 0.99999 and torch.allclose(ours, ref, atol=1e-5)
    assert model.config.last_stride == 2 and model.config.neck == "none"
    assert model.classifier is not None and model.classifier.out_features == 9


@pytest.mark.parametrize("gem", [False, True])
def test_fastreid_import_same_embeddings(tmp_path, gem: bool) -> None:
    net = _randomised_resnet18(last_stride=1)
    bn = nn.BatchNorm2d(512)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state.update({f"heads.bottleneck.0.{k}": v for k, v in bn.state_dict().items()})
    state["heads.weight"] = torch.randn(11, 512)
    if gem:
        state["heads.pool_layer.p"] = torch.tensor([3.5])
    src = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 100, "optimizer": {}, "scheduler": {}}, src)
    import_checkpoint(src, "fastreid", "resnet18", tmp_path / "fr.pt")
    model = load_model(tmp_path / "fr.pt")
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        # fast-reid feeds 0-255 images and normalises with PIXEL_MEAN/STD (ImageNet * 255)
        pixels = x * 255
        y = (pixels - MEAN * 255) / (STD * 255)
        y = net.relu(net.bn1(net.conv1(y)))
        y = F.max_pool2d(y, 3, 2, 0, ceil_mode=True)  # fast-reid's stem
        fmap = net.layer4(net.layer3(net.layer2(net.layer1(y))))
        if gem:
            pooled = F.adaptive_avg_pool2d(fmap.clamp(min=1e-6).pow(3.5), 1).pow(1 / 3.5)
        else:
            pooled = F.adaptive_avg_pool2d(fmap, 1)
        ref = bn.eval()(pooled)[..., 0, 0]  # eval returns the feature after the bottleneck
        ours = model(x)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    assert model.config.maxpool_ceil and model.config.pooling == ("gem" if gem else "avg")
    assert model.classifier is not None and model.classifier.bias is None


def test_wrong_architecture_and_layout_errors(tmp_path) -> None:
    src = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    with pytest.raises(ArchitectureError, match="resnet50"):
        import_checkpoint(src, "torchvision", "resnet50", tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="'model'"):
        import_checkpoint(src, "fastreid", "resnet18", tmp_path / "y.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_torchreid_osnet_import_keeps_fc_block(tmp_path) -> None:
    from reidcompress.models.backbones import build_backbone

    trunk = randomise_norms(build_backbone("osnet_tiny", 1))
    fc, fc_bn, classifier = nn.Linear(128, 64), randomise_norms(nn.BatchNorm1d(64)), nn.Linear(64, 9)
    # torchreid's OSNet state dict: trunk keys at the top level, then fc.0 (Linear), fc.1 (BN1d), classifier
    state = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"module.fc.0.{k}": v for k, v in fc.state_dict().items()})
    state.update({f"module.fc.1.{k}": v for k, v in fc_bn.state_dict().items()})
    state.update({f"module.classifier.{k}": v for k, v in classifier.state_dict().items()})
    src = tmp_path / "osnet_tiny.pth.tar"
    torch.save({"state_dict": state, "epoch": 250, "rank1": 0.9, "optimizer": {}}, src)
    model = import_checkpoint(src, "torchreid", "osnet_tiny", tmp_path / "os.pt")
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        # torchreid OSNet.forward in eval: v = fc(global_avgpool(featuremaps(x))), the 512-d (here 64-d) ReLU output
        ref = F.relu(fc_bn(fc(trunk((x - MEAN) / STD).mean((2, 3)))))
        ours = load_model(tmp_path / "os.pt")(x)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert model.config.fc_dim == 64 and model.config.neck == "none" and model.config.last_stride == 1
    assert model.classifier is not None and model.classifier.bias is not None


def test_fastreid_ibn_import_same_embeddings_and_arch_hint(tmp_path) -> None:
    from reidcompress.models.backbones import build_backbone

    trunk = randomise_norms(build_backbone("resnet_ibn_a_tiny", 1, maxpool_ceil=True))
    bn = randomise_norms(nn.BatchNorm2d(256))
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"heads.bottleneck.0.{k}": v for k, v in bn.state_dict().items()})
    state["heads.weight"] = torch.randn(5, 256)
    src = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 10}, src)
    import_checkpoint(src, "fastreid", "resnet_ibn_a_tiny", tmp_path / "fr.pt")
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        ref = bn(F.adaptive_avg_pool2d(trunk((x * 255 - MEAN * 255) / (STD * 255)), 1))[..., 0, 0]
        ours = load_model(tmp_path / "fr.pt")(x)
    assert torch.allclose(ours, ref, atol=1e-4)
    with pytest.raises(ArchitectureError, match="try --arch resnet50_ibn_a"):
        import_checkpoint(src, "fastreid", "tiny", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()

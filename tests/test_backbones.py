"""The backbone registry and the OSNet / IBN-ResNet / MobileNetV2 trunks.

References are independent of the code under test: torchreid's published model-zoo sizes, key
names copied from torchreid 0.2.5's model files, and for pruned checkpoints the unpruned network
with the removed channels' consumers zeroed (which must compute exactly what the smaller network does).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from reidcompress.errors import ArchitectureError
from reidcompress.models.backbones import BackboneEntry, build_backbone, list_backbones, register_backbone
from reidcompress.models.checkpoint import load_model, save_model
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.models.summary import count_flops, count_params
from reidcompress.testing import randomise_norms

NEW = [
    "osnet_x1_0",
    "osnet_x0_75",
    "osnet_x0_5",
    "osnet_x0_25",
    "osnet_ain_x1_0",
    "osnet_ibn_x1_0",
    "resnet50_ibn_a",
    "resnet50_ibn_b",
    "mobilenetv2_x1_0",
    "mobilenetv2_x1_4",
]
TINY = ["osnet_tiny", "osnet_ibn_tiny", "osnet_ain_tiny", "resnet_ibn_a_tiny", "resnet_ibn_b_tiny", "mobilenetv2_tiny"]


def test_registry_has_the_torchreid_names_and_refuses_duplicates() -> None:
    assert set(NEW + TINY) <= set(list_backbones())
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("osnet_x1_0", BackboneEntry(lambda s, c: nn.Identity()))
    with pytest.raises(ArchitectureError, match="osnet_x0_25.*resnet50_ibn_a"):
        build_backbone("osnet_x2_0")
    with pytest.raises(ArchitectureError, match="last_stride must be one of 1"):
        ReIDNet(ReIDConfig(arch="osnet_tiny", last_stride=2))
    with pytest.raises(ArchitectureError, match="ResNets only"):
        ReIDNet(ReIDConfig(arch="mobilenetv2_tiny", maxpool_ceil=True))


@pytest.mark.parametrize(
    ("arch", "params_m", "gmacs", "last_stride"),
    [
        # torchreid's model zoo (docs/MODEL_ZOO.md): params (M) and "GFLOPs" (multiply-adds) at 256x128
        ("osnet_x1_0", 2.2, 0.98, 1),
        ("osnet_x0_75", 1.3, 0.57, 1),
        ("osnet_x0_5", 0.6, 0.27, 1),
        ("osnet_x0_25", 0.2, 0.08, 1),
        ("mobilenetv2_x1_0", 2.2, 0.2, 2),
    ],
)
def test_sizes_match_torchreid_model_zoo(arch: str, params_m: float, gmacs: float, last_stride: int) -> None:
    model = ReIDNet(ReIDConfig(arch=arch, neck="none", last_stride=last_stride))
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=0.05 * params_m + 0.01)
    assert count_flops(model, (256, 128)) / 2e9 == pytest.approx(gmacs, rel=0.05, abs=0.005)


@pytest.mark.parametrize(
    ("arch", "keys", "absent"),
    [
        # key names from torchreid 0.2.5 reid/models/*.py
        (
            "osnet_x0_25",
            [
                "conv1.conv.weight",
                "conv2.0.conv2a.conv2.weight",
                "conv2.0.gate.fc1.bias",
                "conv2.2.0.conv.weight",
                "conv3.0.downsample.bn.running_var",
                "conv4.1.conv2d.3.bn.weight",
                "conv5.bn.weight",
            ],
            ["conv4.2.0.conv.weight"],
        ),
        ("osnet_ibn_x1_0", ["conv1.bn.weight", "conv2.0.IN.weight", "conv2.1.IN.bias"], ["conv1.bn.running_mean"]),
        (
            "osnet_ain_x1_0",
            [
                "conv2.0.conv2.3.layers.3.conv2.weight",
                "pool2.0.conv.weight",
                "conv2.0.IN.weight",
                "conv3.0.conv3.bn.weight",
                "conv4.1.conv3.bn.weight",
            ],
            ["conv2.0.conv3.bn.weight", "conv3.0.IN.weight", "conv1.bn.running_mean"],
        ),
        (
            "resnet50_ibn_a",
            ["layer1.0.bn1.IN.weight", "layer3.5.bn1.BN.running_mean", "layer4.0.bn1.running_mean"],
            ["layer4.0.bn1.IN.weight", "layer1.0.bn1.running_mean"],
        ),
        (
            "resnet50_ibn_b",
            ["bn1.weight", "layer1.2.IN.weight", "layer2.3.IN.bias"],
            ["bn1.running_mean", "layer3.5.IN.weight"],
        ),
        (
            "mobilenetv2_x1_0",
            ["conv2.0.dwconv2.conv.weight", "conv4.2.conv3.1.running_var", "conv9.bn.weight"],
            ["conv10.bn.weight"],
        ),
    ],
)
def test_trunk_parameter_names_are_torchreids(arch: str, keys: list[str], absent: list[str]) -> None:
    sd = build_backbone(arch, 1).state_dict()
    assert set(keys) <= set(sd), sorted(set(keys) - set(sd))
    assert not set(absent) & set(sd)


def test_osnet_head_is_torchreids_fc_block() -> None:
    model = ReIDNet(ReIDConfig(arch="osnet_x0_25", neck="none", num_classes=10, classifier_bias=True))
    assert {"fc.0.weight", "fc.0.bias", "fc.1.running_mean", "classifier.weight"} <= set(model.state_dict())
    assert model.embedding_dim == 512 and model.classifier is not None and model.classifier.in_features == 512
    # The architecture's own fc is the default; fc_dim=0 drops it, and the saved config says which.
    assert ReIDConfig(arch="osnet_x0_25").fc_dim == 512 and ReIDConfig(arch="resnet50").fc_dim == 0
    assert ReIDNet(ReIDConfig(arch="osnet_tiny", fc_dim=0)).embedding_dim == 128
    assert ReIDConfig().replace(arch="osnet_tiny").fc_dim == 128


@pytest.mark.parametrize("arch", TINY)
def test_tiny_variants_train_eval_and_reload(arch: str, tmp_path) -> None:
    model = ReIDNet(ReIDConfig(arch=arch, num_classes=4, input_size=(64, 32)))
    x = torch.rand(2, 3, 64, 32)
    feat, logits = model.train()(x)
    assert feat.shape == (2, model.embedding_dim) and logits.shape == (2, 4)
    randomise_norms(model)
    loaded = load_model(save_model(tmp_path / "m.pt", model))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --- pruned checkpoints rebuild from shapes ------------------------------------------------------


def _slice(sd: dict[str, torch.Tensor], keep: torch.Tensor, producers: Sequence[str], consumers: Sequence[str]) -> dict:
    """The state dict with channels ``keep`` of the producers' outputs (dim 0 of every entry under the
    prefix; ``"<prefix>@ibn"`` for an IBN split at its InstanceNorm width) and the consumers' inputs."""
    out = dict(sd)
    for p in producers:
        if p.endswith("@ibn"):
            p = p.removesuffix("@ibn")
            half = sd[f"{p}.IN.weight"].shape[0]
            for part, idx in (("IN", keep[keep < half]), ("BN", keep[keep >= half] - half)):
                for k in [k for k in sd if k.startswith(f"{p}.{part}.") and sd[k].dim() == 1]:
                    out[k] = sd[k][idx].clone()
            continue
        for k in [k for k in sd if k.startswith(f"{p}.") and sd[k].dim() >= 1]:
            out[k] = sd[k][keep].clone()
    for c in consumers:
        out[f"{c}.weight"] = out[f"{c}.weight"][:, keep].clone()  # after its own rows, if also a producer
    return out


def _zeroed(sd: dict[str, torch.Tensor], keep: torch.Tensor, consumers: Sequence[str]) -> dict:
    out = dict(sd)
    for c in consumers:
        w = sd[f"{c}.weight"].clone()
        dropped = torch.ones(w.shape[1], dtype=torch.bool)
        dropped[keep] = False
        w[:, dropped] = 0
        out[f"{c}.weight"] = w
    return out


def _osnet_block(b: str) -> tuple[list[str], list[str]]:
    """Everything one OSBlock's shared mid width (conv1 output, every stream, the gate) touches."""
    lights = [f"{b}.conv2a"] + [f"{b}.conv2{s}.{i}" for s, n in (("b", 2), ("c", 3), ("d", 4)) for i in range(n)]
    producers = [f"{b}.conv1.conv", f"{b}.conv1.bn", f"{b}.gate.fc2"]
    producers += [f"{lc}.{m}" for lc in lights for m in ("conv1", "conv2", "bn")]
    consumers = [f"{lc}.conv1" for lc in lights] + [f"{b}.gate.fc1", f"{b}.conv3.conv"]
    return producers, consumers


CASES = {
    # IBN-a: the split point moves (channels removed on both sides of it)
    "resnet_ibn_a_tiny": (["backbone.layer2.0.conv1", "backbone.layer2.0.bn1@ibn"], ["backbone.layer2.0.conv2"], 16),
    # MobileNetV2: a depthwise conv pruned with its producer (groups follow)
    "mobilenetv2_tiny": (
        [
            "backbone.conv3.1.conv1.conv",
            "backbone.conv3.1.conv1.bn",
            "backbone.conv3.1.dwconv2.conv",
            "backbone.conv3.1.dwconv2.bn",
        ],
        ["backbone.conv3.1.conv3.0"],
        36,
    ),
    # OSNet: the gate shared by four streams of depthwise LightConv3x3s, pruned consistently
    "osnet_tiny": (*_osnet_block("backbone.conv3.0"), 24),
}


@pytest.mark.parametrize("arch", list(CASES))
def test_pruned_widths_rebuild_from_shapes_and_compute_the_smaller_network(arch: str, tmp_path) -> None:
    producers, consumers, width = CASES[arch]
    model = randomise_norms(ReIDNet(ReIDConfig(arch=arch, num_classes=3, input_size=(64, 32))))
    keep = torch.tensor([i for i in range(width) if i % 3 != 1])  # drops a third, both sides of an IBN split
    sd = model.state_dict()
    pruned = ReIDNet.from_state_dict(model.config, _slice(sd, keep, producers, consumers)).eval()
    path = save_model(tmp_path / "p.pt", pruned, pruning={"method": "manual"})
    assert torch.load(path, weights_only=True)["pruning"] == {"method": "manual"}
    reloaded = load_model(path)
    reference = ReIDNet.from_state_dict(model.config, _zeroed(sd, keep, consumers)).eval()
    x = torch.rand(3, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), reference(x), rtol=1e-4, atol=1e-5)
    for m in reloaded.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == m.out_channels == m.in_channels
    if arch == "resnet_ibn_a_tiny":
        ibn = reloaded.backbone.layer2[0].bn1
        assert (ibn.half, ibn.BN.num_features) == (int((keep < 8).sum()), int((keep >= 8).sum()))


def test_head_that_does_not_fit_the_trunk_is_refused_on_load() -> None:
    sd = ReIDNet(ReIDConfig(arch="osnet_tiny", num_classes=3)).state_dict()
    sd["fc.0.weight"] = torch.zeros(128, 96)  # shapes alone would rebuild a 96-input fc
    with pytest.raises(ArchitectureError, match="fc layer's input is 96-d, the feature is 128-d"):
        ReIDNet.from_state_dict(ReIDConfig(arch="osnet_tiny", num_classes=3), sd)

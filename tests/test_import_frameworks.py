"""Import parity against the frameworks' own code (torchreid 0.2.5 sdist, fast-reid 1.4.0 wheel).

Slow, and skipped unless the unpacked sources are named by REIDCOMPRESS_TORCHREID_SRC /
REIDCOMPRESS_FASTREID_SRC (fast-reid also needs yacs, termcolor and tabulate importable); see
tools/check_import_parity.py for the download commands and the full-size report.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from reidcompress.models.checkpoint import load_model
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.reid import IMAGENET_MEAN, IMAGENET_STD
from reidcompress.testing import load_torchreid_model_file, randomise_norms

pytestmark = pytest.mark.slow

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _source(var: str) -> Path:
    path = os.environ.get(var)
    if not path or not Path(path).is_dir():
        pytest.skip(f"{var} does not name an unpacked framework source tree")
    return Path(path)


@pytest.mark.parametrize(
    ("arch", "stem"),
    [
        ("osnet_x0_25", "osnet"),
        ("osnet_ibn_x1_0", "osnet"),
        ("osnet_ain_x1_0", "osnet_ain"),
        ("resnet50_ibn_a", "resnet_ibn_a"),
        ("resnet50_ibn_b", "resnet_ibn_b"),
        ("mobilenetv2_x1_0", "mobilenetv2"),
    ],
)
def test_torchreid_parity(arch: str, stem: str, tmp_path) -> None:
    src = _source("REIDCOMPRESS_TORCHREID_SRC")
    net = randomise_norms(
        getattr(load_torchreid_model_file(src, stem), arch)(num_classes=11, loss="triplet", pretrained=False)
    )
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 1, "rank1": 0.0, "optimizer": {}}, tmp_path / "tr.pth.tar")
    import_checkpoint(tmp_path / "tr.pth.tar", "torchreid", arch, tmp_path / "ours.pt")
    x = torch.rand(3, 3, 128, 64)
    with torch.no_grad():
        ref, ours = net((x - MEAN) / STD), load_model(tmp_path / "ours.pt")(x)
    assert ours.shape == ref.shape
    assert F.cosine_similarity(ours, ref).min().item() >= 0.9999


def test_fastreid_bot_r50_ibn_parity(tmp_path) -> None:
    src = _source("REIDCOMPRESS_FASTREID_SRC")
    for dep in ("yacs", "termcolor", "tabulate"):
        pytest.importorskip(dep)
    sys.path.insert(0, str(src))
    try:
        from fastreid.config import get_cfg
        from fastreid.modeling.meta_arch import build_model
    finally:
        sys.path.remove(str(src))
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.WITH_IBN = True
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    cfg.MODEL.HEADS.NUM_CLASSES = 11
    cfg.MODEL.DEVICE = "cpu"
    net = randomise_norms(build_model(cfg))
    torch.save({"model": net.state_dict(), "iteration": 1}, tmp_path / "model_final.pth")
    import_checkpoint(tmp_path / "model_final.pth", "fastreid", "resnet50_ibn_a", tmp_path / "ours.pt")
    x = torch.rand(3, 3, 128, 64)
    with torch.no_grad():
        ref, ours = net({"images": x * 255}), load_model(tmp_path / "ours.pt")(x)
    assert F.cosine_similarity(ours, ref).min().item() >= 0.9999

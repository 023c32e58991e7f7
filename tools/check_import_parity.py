"""Check that `reidcompress import` reproduces the embeddings of the framework that trained a model.

Builds the framework's own ResNet (random weights, randomised BN statistics), saves it in the
framework's checkpoint layout, imports it, and compares eval-mode embeddings on the same images.
Needs the framework's source (not installed by reidcompress):

    pip download --no-deps torchreid==0.2.5 fastreid==1.4.0 && tar xzf torchreid-0.2.5.tar.gz \
        && unzip -q fastreid-1.4.0-py3-none-any.whl -d fastreid-src && pip install yacs termcolor tabulate
    python tools/check_import_parity.py --torchreid-src torchreid-0.2.5 --fastreid-src fastreid-src
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from reidcompress.models.checkpoint import load_model
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.reid import IMAGENET_MEAN, IMAGENET_STD

ARCHS = ("resnet18", "resnet34", "resnet50")


def _randomise_bn(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.1, 0.1)


def _compare(name: str, ref: torch.Tensor, ours: torch.Tensor) -> bool:
    diff = (ref - ours).abs().max().item()
    cos = F.cosine_similarity(ref, ours).min().item()
    ok = cos > 0.9999
    print(f"{name:32s} max|diff| {diff:.2e}  min cosine {cos:.7f}  {'OK' if ok else 'MISMATCH'}")
    return ok


def check_torchreid(src: Path, work: Path, x: torch.Tensor) -> bool:
    path = next(src.rglob("reid/models/resnet.py"))
    spec = importlib.util.spec_from_file_location("torchreid_resnet", path)
    assert spec and spec.loader
    tr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tr)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ok = True
    for arch in ARCHS:
        net = getattr(tr, arch)(num_classes=751, loss="triplet", pretrained=False)
        _randomise_bn(net)
        net.eval()
        ckpt = work / f"torchreid_{arch}.pth.tar"
        state = {f"module.{k}": v for k, v in net.state_dict().items()}
        torch.save({"state_dict": state, "epoch": 1, "rank1": 0.0, "optimizer": {}}, ckpt)
        import_checkpoint(ckpt, "torchreid", arch, work / f"ours_tr_{arch}.pt")
        with torch.no_grad():
            ok &= _compare(f"torchreid {arch}", net((x - mean) / std), load_model(work / f"ours_tr_{arch}.pt")(x))
    return ok


def check_fastreid(src: Path, work: Path, x: torch.Tensor) -> bool:
    sys.path.insert(0, str(src))
    from fastreid.config import get_cfg
    from fastreid.modeling.meta_arch import build_model

    ok = True
    for arch in ARCHS:
        for pool in ("GlobalAvgPool", "GeneralizedMeanPoolingP"):
            cfg = get_cfg()
            cfg.MODEL.BACKBONE.DEPTH = arch.removeprefix("resnet") + "x"
            cfg.MODEL.BACKBONE.FEAT_DIM = 2048 if arch == "resnet50" else 512
            cfg.MODEL.BACKBONE.PRETRAIN = False
            cfg.MODEL.HEADS.WITH_BNNECK = True
            cfg.MODEL.HEADS.POOL_LAYER = pool
            cfg.MODEL.HEADS.NUM_CLASSES = 751
            cfg.MODEL.DEVICE = "cpu"
            net = build_model(cfg)
            _randomise_bn(net)
            net.eval()
            ckpt = work / "fastreid_model_final.pth"
            torch.save({"model": net.state_dict(), "iteration": 1}, ckpt)
            import_checkpoint(ckpt, "fastreid", arch, work / "ours_fr.pt")
            with torch.no_grad():
                ref = net({"images": x * 255})  # fast-reid takes 0-255 pixels
                ok &= _compare(f"fast-reid {arch} {pool}", ref, load_model(work / "ours_fr.pt")(x))
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torchreid-src", type=Path, help="unpacked torchreid source tree")
    ap.add_argument("--fastreid-src", type=Path, help="folder holding the fastreid package")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.rand(4, 3, 256, 128)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if args.torchreid_src:
            ok &= check_torchreid(args.torchreid_src, Path(tmp), x)
        if args.fastreid_src:
            ok &= check_fastreid(args.fastreid_src, Path(tmp), x)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Check that `reidcompress import` reproduces the embeddings of the framework that trained a model.

Builds each network with the framework's own code (random weights, randomised BatchNorm statistics
and norm affines, so parity is not trivial), saves it in the framework's checkpoint layout, imports
it, and compares eval-mode embeddings on the same images: rendered person crops from
`reidcompress data synth` and uniform noise. Needs the frameworks' source (not installed by
reidcompress; torchreid's model files need only torch, fast-reid needs its config system):

    pip download --no-deps torchreid==0.2.5 fastreid==1.4.0 && tar xzf torchreid-0.2.5.tar.gz \
        && unzip -q fastreid-1.4.0-py3-none-any.whl -d fastreid-src \
        && pip install --target fastreid-deps yacs termcolor tabulate
    PYTHONPATH=.:fastreid-deps python tools/check_import_parity.py \
        --torchreid-src torchreid-0.2.5 --fastreid-src fastreid-src
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from reidcompress.data.synth import synthesize
from reidcompress.models.checkpoint import load_model
from reidcompress.models.importers import import_checkpoint
from reidcompress.models.reid import IMAGENET_MEAN, IMAGENET_STD
from reidcompress.testing import load_torchreid_model_file, randomise_norms

# torchreid architecture -> the file under reid/models/ that defines it
TORCHREID = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "osnet_x0_25": "osnet",
    "osnet_x0_5": "osnet",
    "osnet_x0_75": "osnet",
    "osnet_x1_0": "osnet",
    "osnet_ibn_x1_0": "osnet",
    "osnet_ain_x1_0": "osnet_ain",
    "resnet50_ibn_a": "resnet_ibn_a",
    "resnet50_ibn_b": "resnet_ibn_b",
    "mobilenetv2_x1_0": "mobilenetv2",
    "mobilenetv2_x1_4": "mobilenetv2",
}
# fast-reid (DEPTH, WITH_IBN, FEAT_DIM) -> our architecture
FASTREID = {("18x", False, 512): "resnet18", ("50x", False, 2048): "resnet50", ("50x", True, 2048): "resnet50_ibn_a"}
MIN_COSINE = 0.9999


def _compare(name: str, ref: torch.Tensor, ours: torch.Tensor) -> bool:
    diff = (ref - ours).abs().max().item()
    cos = F.cosine_similarity(ref, ours).min().item()
    ok = ref.shape == ours.shape and cos >= MIN_COSINE
    verdict = "OK" if ok else "MISMATCH"
    print(f"{name:44s} dim {ours.shape[1]:5d}  max|diff| {diff:.2e}  min cosine {cos:.7f}  {verdict}")
    return ok


def check_torchreid(src: Path, work: Path, images: dict[str, torch.Tensor], archs: list[str]) -> bool:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ok = True
    for arch in archs:
        net = getattr(load_torchreid_model_file(src, TORCHREID[arch]), arch)(
            num_classes=751, loss="triplet", pretrained=False
        )
        randomise_norms(net)  # and puts it in eval mode
        ckpt = work / f"torchreid_{arch}.pth.tar"
        state = {f"module.{k}": v for k, v in net.state_dict().items()}
        torch.save({"state_dict": state, "epoch": 1, "rank1": 0.0, "optimizer": {}}, ckpt)
        import_checkpoint(ckpt, "torchreid", arch, work / f"ours_tr_{arch}.pt")
        ours = load_model(work / f"ours_tr_{arch}.pt")
        for kind, x in images.items():
            with torch.no_grad():
                ok &= _compare(f"torchreid {arch} ({kind})", net((x - mean) / std), ours(x))
    return ok


def check_fastreid(src: Path, work: Path, images: dict[str, torch.Tensor]) -> bool:
    sys.path.insert(0, str(src))
    from fastreid.config import get_cfg
    from fastreid.modeling.meta_arch import build_model

    ok = True
    for (depth, ibn, feat_dim), arch in FASTREID.items():
        for pool in ("GlobalAvgPool", "GeneralizedMeanPoolingP"):
            # The BoT model (configs/Base-bagtricks.yml; bagtricks_R50-ibn.yml adds WITH_IBN); the
            # wheel ships no configs, so the model keys are set here.
            cfg = get_cfg()
            cfg.MODEL.META_ARCHITECTURE = "Baseline"
            cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
            cfg.MODEL.BACKBONE.NORM = "BN"
            cfg.MODEL.BACKBONE.LAST_STRIDE = 1
            cfg.MODEL.HEADS.NAME = "EmbeddingHead"
            cfg.MODEL.HEADS.NORM = "BN"
            cfg.MODEL.HEADS.NECK_FEAT = "before"
            cfg.MODEL.HEADS.CLS_LAYER = "Linear"
            cfg.MODEL.BACKBONE.DEPTH = depth
            cfg.MODEL.BACKBONE.WITH_IBN = ibn
            cfg.MODEL.BACKBONE.FEAT_DIM = feat_dim
            cfg.MODEL.BACKBONE.PRETRAIN = False
            cfg.MODEL.HEADS.WITH_BNNECK = True
            cfg.MODEL.HEADS.POOL_LAYER = pool
            cfg.MODEL.HEADS.NUM_CLASSES = 751
            cfg.MODEL.DEVICE = "cpu"
            net = randomise_norms(build_model(cfg))
            ckpt = work / "fastreid_model_final.pth"
            torch.save({"model": net.state_dict(), "iteration": 1}, ckpt)
            import_checkpoint(ckpt, "fastreid", arch, work / "ours_fr.pt")
            ours = load_model(work / "ours_fr.pt")
            for kind, x in images.items():
                with torch.no_grad():
                    ref = net({"images": x * 255})  # fast-reid takes 0-255 pixels
                    ok &= _compare(f"fast-reid {arch} {pool} ({kind})", ref, ours(x))
    return ok


def _images(work: Path, n: int = 8) -> dict[str, torch.Tensor]:
    synthesize(work / "synth", ids=4, cams=2, images_per_id=4, seed=0, size=(256, 128))
    files = sorted((work / "synth").rglob("*.jpg"))[:n]
    crops = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255) for f in files]
    return {"synth crops": torch.stack(crops).permute(0, 3, 1, 2).contiguous(), "noise": torch.rand(4, 3, 256, 128)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torchreid-src", type=Path, help="unpacked torchreid source tree")
    ap.add_argument("--fastreid-src", type=Path, help="folder holding the fastreid package")
    ap.add_argument("--archs", nargs="+", default=list(TORCHREID), choices=list(TORCHREID), help="torchreid archs")
    args = ap.parse_args()
    torch.manual_seed(0)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        images = _images(Path(tmp))
        if args.torchreid_src:
            ok &= check_torchreid(args.torchreid_src, Path(tmp), images, args.archs)
        if args.fastreid_src:
            ok &= check_fastreid(args.fastreid_src, Path(tmp), images)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

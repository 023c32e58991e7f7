"""Synthetic person ReID datasets written in the exact Market-1501 layout.

Each identity has a body shape, clothing colours and patterns and accessories; each camera its own
lighting, colour cast, blur, noise, framing, main viewpoint and scene. Matching across cameras is
therefore not a pixel comparison (raw pixels and colour histograms score low), while a small CNN learns
it in minutes, which makes the set a stand-in for Market-1501 in tests and demos. A *style* is a camera
network plus a population: ``source`` is daylight, ``target`` night and overcast with a winter-clothed
population, so a model trained on one loses accuracy on the other and fine-tuning recovers it.

Output: ``bounding_box_train/``, ``bounding_box_test/`` (with junk ``-1_*`` and distractor ``0000_*``
images, as Market-1501), ``query/`` (one image per test identity per camera, taken out of the gallery)
and ``synth.json`` with the parameters. The same arguments give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import umask_mode
from reidcompress.data._render import (
    Appearance,
    Camera,
    CameraRanges,
    Identity,
    encode_jpeg,
    make_background,
    make_camera,
    make_identity,
    render_image,
)
from reidcompress.errors import InputError

__all__ = ["Style", "register_style", "list_styles", "get_style", "synthesize", "MAX_CAMS"]

MAX_CAMS = 6  # Market-1501 names carry one camera digit and parsers accept c1..c6
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Style:
    """A domain: a camera network and a population of identities."""

    name: str
    description: str
    cameras: CameraRanges
    people: Appearance


_STYLES: dict[str, Callable[[], Style]] = {}


def register_style(name: str) -> Callable[[Callable[[], Style]], Callable[[], Style]]:
    """Register a zero-argument factory returning a :class:`Style`."""

    def deco(fn: Callable[[], Style]) -> Callable[[], Style]:
        if name in _STYLES:
            raise ValueError(f"style {name!r} is already registered")
        _STYLES[name] = fn
        return fn

    return deco


def list_styles() -> list[str]:
    return sorted(_STYLES)


def get_style(name: str) -> Style:
    if name not in _STYLES:
        raise InputError(f"unknown synthetic style {name!r}; valid styles: {', '.join(list_styles())}")
    return _STYLES[name]()


@register_style("source")
def _source() -> Style:
    return Style(
        name="source",
        description="daylight: bright, mild warm/cool casts, urban and park scenes; summer clothing",
        cameras=CameraRanges(
            gain=(0.9, 1.2),
            tints=((1.0, 1.0, 1.0), (1.1, 1.0, 0.88), (0.9, 0.98, 1.12)),
            cast=0.15,
            gamma=(0.8, 1.2),
            contrast=(0.85, 1.15),
            blur=(0.0, 1.0),
            noise=(0.01, 0.03),
            person_height=(0.75, 0.96),
            occlusion=(0.0, 0.25),
            clutter=(0.2, 1.5),
            jpeg=(70, 95),
            backgrounds=("brick", "foliage", "tiles", "street", "glass", "plain"),
            bg_saturation=(0.05, 0.5),
            bg_value=(0.35, 0.9),
        ),
        people=Appearance(
            cloth_value=(0.25, 0.95),
            cloth_saturation=(0.15, 0.9),
            patterns=(0.5, 0.2, 0.1, 0.2),
            bags=(0.45, 0.25, 0.2, 0.1),
            logo=0.4,
            coat=0.1,
            shorts=0.3,
            skirt=0.1,
            hat=0.15,
            long_hair=0.3,
            short_sleeves=0.55,
        ),
    )


@register_style("target")
def _target() -> Style:
    return Style(
        name="target",
        description="night and overcast: dim, sodium/blue/green casts, noisy and blurred, snow and tunnels; "
        "winter clothing (dark, muted, coats, hats)",
        cameras=CameraRanges(
            gain=(0.65, 0.95),
            tints=((1.12, 1.0, 0.82), (0.86, 0.95, 1.18), (0.95, 1.08, 0.92)),
            cast=0.1,
            gamma=(1.0, 1.3),
            contrast=(0.75, 0.95),
            blur=(0.4, 1.3),
            noise=(0.02, 0.05),
            person_height=(0.68, 0.92),
            occlusion=(0.1, 0.35),
            clutter=(0.5, 2.0),
            jpeg=(55, 85),
            backgrounds=("lamps", "snow", "tunnel", "foliage", "brick", "glass"),
            bg_saturation=(0.0, 0.35),
            bg_value=(0.15, 0.6),
        ),
        people=Appearance(
            cloth_value=(0.18, 0.85),
            cloth_saturation=(0.1, 0.75),
            patterns=(0.45, 0.15, 0.1, 0.3),
            bags=(0.3, 0.45, 0.15, 0.1),
            logo=0.25,
            coat=0.4,
            shorts=0.05,
            skirt=0.08,
            hat=0.35,
            long_hair=0.3,
            short_sleeves=0.15,
        ),
    )


# ------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Shot:
    split: str
    pid: int  # -1 junk, 0 distractor
    cam: int  # 0-based
    name: str
    subject: int  # identity drawn: pid, a test pid for junk, 0 for an empty scene, -1 for a stranger


class _Frames:
    """Market-style frame numbers: increasing per camera, so names never collide."""

    def __init__(self, rng: np.random.Generator, cams: int):
        self.rng = rng
        self.next = rng.integers(100, 2000, cams)

    def name(self, pid: int, cam: int, seq: int) -> str:
        frame = int(self.next[cam])
        self.next[cam] += self.rng.integers(1, 60)
        tag = "-1" if pid == -1 else f"{pid:04d}"
        return f"{tag}_c{cam + 1}s{seq}_{frame:06d}_{int(self.rng.integers(1, 9)):02d}.jpg"


def _identity_shots(
    rng: np.random.Generator, frames: _Frames, pid: int, test: bool, cams: int, k: int, query_per_id: int | None
) -> list[_Shot]:
    """K images of one identity over 2..cams cameras, at least two per camera (a query keeps a gallery mate)."""
    m = int(rng.integers(2, min(cams, k // 2) + 1))
    cam_set = np.sort(rng.choice(cams, m, replace=False))
    counts = 2 + rng.multinomial(k - 2 * m, np.full(m, 1 / m))
    q_cams = set(cam_set.tolist())
    if test and query_per_id is not None and query_per_id < m:
        q_cams = set(rng.choice(cam_set, query_per_id, replace=False).tolist())
    shots = []
    for cam, n in zip(cam_set.tolist(), counts.tolist(), strict=True):
        seq = int(rng.integers(1, 7))
        for j in range(n):
            split = "bounding_box_train" if not test else "query" if j == 0 and cam in q_cams else "bounding_box_test"
            shots.append(_Shot(split, pid, cam, frames.name(pid, cam, seq), pid))
    return shots


def _plan(
    rng: np.random.Generator, ids: int, cams: int, k: int, query_per_id: int | None
) -> tuple[list[_Shot], list[int], list[int]]:
    order = rng.permutation(np.arange(1, ids + 1))
    train_ids = sorted(order[: ids // 2].tolist())
    test_ids = sorted(order[ids // 2 :].tolist())
    frames = _Frames(rng, cams)
    shots: list[_Shot] = []
    for pid in range(1, ids + 1):
        shots += _identity_shots(rng, frames, pid, pid in test_ids, cams, k, query_per_id)
    # Market-1501's gallery also holds junk (bad detections, dropped) and distractors (pid 0, kept).
    n_gallery = sum(s.split == "bounding_box_test" for s in shots)
    n_extra = max(cams, round(0.03 * n_gallery))
    for i in range(n_extra):
        cam, seq = i % cams, int(rng.integers(1, 7))
        junk_of = int(rng.choice(test_ids))
        shots.append(_Shot("bounding_box_test", -1, cam, frames.name(-1, cam, seq), junk_of))
        stranger = -1 if rng.uniform() < 0.5 else 0
        shots.append(_Shot("bounding_box_test", 0, cam, frames.name(0, cam, seq), stranger))
    return shots, train_ids, test_ids


# ----------------------------------------------------------------------------------------------- render


def _check_args(ids: int, cams: int, images_per_id: int, size: tuple[int, int], query_per_id: int | None) -> None:
    if ids < 2:
        raise InputError(f"need at least 2 identities (half train, half test), got {ids}")
    if not 2 <= cams <= MAX_CAMS:
        raise InputError(f"cameras must be 2..{MAX_CAMS} (Market-1501 names c1..c6), got {cams}")
    if images_per_id < 4:
        raise InputError(f"need at least 4 images per identity (2 cameras x 2), got {images_per_id}")
    if len(size) != 2 or min(size) < 16:
        raise InputError(f"size must be (height, width) of at least 16x16, got {size}")
    if query_per_id is not None and query_per_id < 1:
        raise InputError(f"query images per identity must be >= 1, got {query_per_id}")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"output folder is not empty: {out} (choose another path, or replace it: `overwrite`)")
        if not (out / "synth.json").is_file():
            raise InputError(f"refusing to overwrite {out}: it is not a synthetic dataset (no synth.json)")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old synthetic set is removed only after that succeeded."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "d")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def synthesize(
    out: str | os.PathLike[str],
    *,
    ids: int,
    cams: int,
    images_per_id: int,
    seed: int,
    style: str = "source",
    size: tuple[int, int] = (128, 64),
    query_per_id: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a synthetic Market-1501-style dataset to ``out`` (atomically: all or nothing).

    Args:
        out: Folder to create (an empty folder is fine).
        ids: Identities; half train, half test, disjoint.
        cams: Cameras, 2..6. Each identity appears in 2..cams of them.
        images_per_id: Images per identity (>= 4), at least two per camera it appears in.
        seed: Identities, their camera plan and every per-image draw; the camera network is the style's.
        style: A name from :func:`list_styles`.
        size: (height, width) of the images.
        query_per_id: Query images per test identity, each from another camera; ``None`` takes one from
            every camera it appears in, as Market-1501 does.
        overwrite: Replace ``out`` if it is a synthetic dataset already.
        progress: Called as ``progress(done, total)`` after each image.

    Returns:
        What ``synth.json`` holds, plus ``out``.
    """
    size = (int(size[0]), int(size[1]))
    _check_args(ids, cams, images_per_id, size, query_per_id)
    st = get_style(style)
    out = Path(out)
    _prepare_out(out, overwrite)
    code = zlib.crc32(st.name.encode())
    shots, train_ids, test_ids = _plan(np.random.default_rng([seed, code, 0]), ids, cams, images_per_id, query_per_id)
    people = {pid: make_identity(np.random.default_rng([seed, code, 1, pid]), st.people) for pid in range(1, ids + 1)}
    cameras = [make_camera(np.random.default_rng([code, 2, c]), st.cameras, c) for c in range(cams)]
    h, w = size
    scenes = [
        make_background(np.random.default_rng([code, 3, c]), cam, h + h // 4, w + w // 2)
        for c, cam in enumerate(cameras)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for split in SPLITS:
            (tmp / split).mkdir()
        for i, shot in enumerate(shots):
            rng = np.random.default_rng([seed, code, 4, i])
            _write_shot(rng, shot, people, st, cameras[shot.cam], scenes[shot.cam], size, tmp)
            if progress is not None:
                progress(i + 1, len(shots))
        info = _describe(st, seed, ids, cams, images_per_id, size, query_per_id, shots, train_ids, test_ids, cameras)
        (tmp / "synth.json").write_text(json.dumps(info, indent=2) + "\n")
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide the dataset from a container's user
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), **info}


def _write_shot(
    rng: np.random.Generator,
    shot: _Shot,
    people: dict[int, Identity],
    st: Style,
    cam: Camera,
    scene: np.ndarray,
    size: tuple[int, int],
    folder: Path,
) -> None:
    if shot.subject > 0:
        person: Identity | None = people[shot.subject]
    elif shot.subject == -1:
        person = make_identity(rng, st.people)  # a stranger seen only here
    else:
        person = None
    img = render_image(rng, cam, scene, size, person, fragment=shot.pid in (-1, 0))
    (folder / shot.split / shot.name).write_bytes(encode_jpeg(img, int(rng.integers(cam.jpeg[0], cam.jpeg[1] + 1))))


def _describe(
    st: Style,
    seed: int,
    ids: int,
    cams: int,
    images_per_id: int,
    size: tuple[int, int],
    query_per_id: int | None,
    shots: list[_Shot],
    train_ids: list[int],
    test_ids: list[int],
    cameras: list[Camera],
) -> dict[str, Any]:
    counts = {split: sum(s.split == split for s in shots) for split in SPLITS}
    return {
        "generator": "reidcompress.data.synth",
        "format_version": FORMAT_VERSION,
        "layout": "market1501",
        "style": st.name,
        "style_description": st.description,
        "seed": seed,
        "ids": ids,
        "cams": cams,
        "images_per_id": images_per_id,
        "size": list(size),
        "query_per_id": query_per_id,
        "images": counts,
        "junk_images": sum(s.pid == -1 for s in shots),
        "distractor_images": sum(s.pid == 0 for s in shots),
        "train_ids": train_ids,
        "test_ids": test_ids,
        "cameras": [dataclasses.asdict(c) for c in cameras],
    }

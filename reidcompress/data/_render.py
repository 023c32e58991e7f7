"""Drawing for the synthetic dataset: identities, cameras, backgrounds and one rendered image.

A person is drawn as a label map (one integer per body part) with PIL at twice the output resolution,
then coloured, patterned and shaded with numpy and box-downsampled, which antialiases the edges. No
per-pixel Python loops: an image costs a few milliseconds.
"""

from __future__ import annotations

import colorsys
import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "Appearance",
    "Camera",
    "CameraRanges",
    "Identity",
    "make_camera",
    "make_identity",
    "render_image",
    "encode_jpeg",
]

SUPERSAMPLE = 2
# Label map values; the palette row of each is the part's colour.
BG, SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, LOGO, HAT = range(9)
VIEWS = ("front", "back", "side")
PATTERNS = ("plain", "hstripes", "vstripes", "checks")
BAGS = ("none", "backpack", "shoulder", "handbag")
LOGO_SHAPES = ("square", "circle", "triangle", "diamond")

Colour = tuple[float, float, float]
Range = tuple[float, float]


@dataclass(frozen=True)
class Appearance:
    """Distribution of identities (a population): clothing colours, patterns, accessories."""

    cloth_value: Range
    cloth_saturation: Range
    patterns: tuple[float, float, float, float]  # probabilities of PATTERNS
    bags: tuple[float, float, float, float]  # probabilities of BAGS
    logo: float
    coat: float
    shorts: float
    skirt: float
    hat: float
    long_hair: float
    short_sleeves: float


@dataclass(frozen=True)
class CameraRanges:
    """Distribution of cameras (a camera network); tints and backgrounds are cycled over the cameras."""

    gain: Range
    tints: tuple[Colour, ...]
    cast: float  # per-channel colour cast drawn in 1 +- cast around the tint
    gamma: Range
    contrast: Range
    blur: Range
    noise: Range
    person_height: Range
    occlusion: Range
    clutter: Range
    jpeg: tuple[int, int]
    backgrounds: tuple[str, ...]
    bg_saturation: Range
    bg_value: Range


@dataclass(frozen=True)
class Identity:
    """One person: body shape (fractions of the person's height), colours and accessories."""

    height: float
    width: float
    head: float
    legs: float
    skin: Colour
    hair: Colour
    long_hair: bool
    hat: Colour | None
    top: Colour
    top2: Colour
    pattern: str
    period: float
    coat: bool
    short_sleeves: bool
    bottom: Colour
    bottom_kind: str
    shoes: Colour
    logo: tuple[str, Colour, float] | None
    bag: str
    bag_colour: Colour
    bag_side: int


@dataclass(frozen=True)
class Camera:
    """One camera: lighting, optics, framing, viewpoint and scene."""

    gain: float
    cast: Colour
    gamma: float
    contrast: float
    blur: float  # Gaussian radius in pixels at 128 px image height
    noise: float  # sensor noise std in [0, 1] units
    person_height: Range  # person height as a fraction of the image height
    views: tuple[float, float, float]  # probabilities of VIEWS
    light: float  # side of the key light, -1..1
    occlusion: float  # probability of an occluder in front of the person
    occluder: Colour
    clutter: float  # mean number of background passers-by
    jpeg: tuple[int, int]
    background: str
    bg_colours: tuple[Colour, Colour, Colour]


def hsv(rng: np.random.Generator, saturation: Range, value: Range, hue: Range = (0.0, 1.0)) -> Colour:
    h = rng.uniform(*hue) % 1.0
    return colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value))


def make_identity(rng: np.random.Generator, look: Appearance) -> Identity:
    skin_v = rng.uniform(0.35, 0.95)
    top = hsv(rng, look.cloth_saturation, look.cloth_value)
    # The pattern's second colour contrasts in value so stripes survive blur and JPEG.
    top2 = hsv(rng, look.cloth_saturation, (0.9, 1.0) if np.mean(top) < 0.5 else (0.05, 0.25))
    pattern = str(rng.choice(PATTERNS, p=look.patterns))
    kind = rng.uniform()
    bottom_kind = "shorts" if kind < look.shorts else "skirt" if kind < look.shorts + look.skirt else "trousers"
    logo = None
    if rng.uniform() < look.logo:
        logo = (str(rng.choice(LOGO_SHAPES)), hsv(rng, (0.6, 1.0), (0.7, 1.0)), float(rng.uniform(0.05, 0.085)))
    return Identity(
        height=float(rng.uniform(0.86, 1.0)),
        width=float(rng.uniform(0.78, 1.3)),
        head=float(rng.uniform(0.055, 0.078)),
        legs=float(rng.uniform(0.42, 0.53)),
        skin=colorsys.hsv_to_rgb(rng.uniform(0.03, 0.1), rng.uniform(0.3, 0.6), skin_v),
        hair=hsv(rng, (0.2, 0.7), (0.05, 0.6), hue=(0.02, 0.12)),
        long_hair=bool(rng.uniform() < look.long_hair),
        hat=hsv(rng, look.cloth_saturation, look.cloth_value) if rng.uniform() < look.hat else None,
        top=top,
        top2=top2,
        pattern=pattern,
        period=float(rng.uniform(0.035, 0.07)),
        coat=bool(rng.uniform() < look.coat),
        short_sleeves=bool(rng.uniform() < look.short_sleeves),
        bottom=hsv(rng, look.cloth_saturation, look.cloth_value),
        bottom_kind=bottom_kind,
        shoes=hsv(rng, (0.0, 0.6), (0.05, 0.95)),
        logo=logo,
        bag=str(rng.choice(BAGS, p=look.bags)),
        bag_colour=hsv(rng, look.cloth_saturation, look.cloth_value),
        bag_side=int(rng.choice((-1, 1))),
    )


def make_camera(rng: np.random.Generator, ranges: CameraRanges, index: int) -> Camera:
    """Camera ``index`` of a camera network; scene, tint and main viewpoint cycle so cameras differ."""
    r = ranges
    cast = np.asarray(r.tints[index % len(r.tints)]) * (1 + rng.uniform(-r.cast, r.cast, 3))
    views = np.full(3, 0.2)
    views[index % 3] = 0.6
    lo, hi = r.person_height
    tallest = rng.uniform(lo + 0.6 * (hi - lo), hi)
    bg = (r.bg_saturation, r.bg_value)
    return Camera(
        gain=float(rng.uniform(*r.gain)),
        cast=(float(cast[0]), float(cast[1]), float(cast[2])),
        gamma=float(rng.uniform(*r.gamma)),
        contrast=float(rng.uniform(*r.contrast)),
        blur=float(rng.uniform(*r.blur)),
        noise=float(rng.uniform(*r.noise)),
        person_height=(float(tallest - 0.6 * (hi - lo)), float(tallest)),
        views=(float(views[0]), float(views[1]), float(views[2])),
        light=float(rng.uniform(-1, 1)),
        occlusion=float(rng.uniform(*r.occlusion)),
        occluder=hsv(rng, *bg),
        clutter=float(rng.uniform(*r.clutter)),
        jpeg=r.jpeg,
        background=r.backgrounds[index % len(r.backgrounds)],
        bg_colours=(hsv(rng, *bg), hsv(rng, *bg), hsv(rng, *bg)),
    )


# ------------------------------------------------------------------------------------------- backgrounds


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates (read-only, shared between calls)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = (rng.uniform(0, 255, cells)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0


def _mix(a: Colour, b: Colour, t: np.ndarray) -> np.ndarray:
    a_, b_ = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a_ + (b_ - a_) * t[..., None]


def make_background(rng: np.random.Generator, cam: Camera, h: int, w: int) -> np.ndarray:
    """The camera's static scene, larger than a frame so each image crops it at a jittered offset."""
    c1, c2, c3 = cam.bg_colours
    yy, xx = _grid(h, w)
    t = yy / h
    kind = cam.background
    if kind == "brick":
        bh, bw = h / rng.uniform(10, 16), w / rng.uniform(2.5, 4)
        row = (yy // bh).astype(int)
        shifted = xx + (row % 2) * bw / 2
        col = (shifted // bw).astype(int)
        tone = rng.uniform(0.8, 1.15, (row.max() + 1, col.max() + 1))[row, col]
        img = np.asarray(c1, np.float32) * tone[..., None]
        mortar = ((yy % bh) < max(1.0, bh * 0.12)) | ((shifted % bw) < max(1.0, bw * 0.06))
        img[mortar] = c2
    elif kind == "tiles":
        horizon = h * rng.uniform(0.45, 0.6)
        depth = np.maximum(yy - horizon, 1.0)
        checker = ((h / depth).astype(int) + ((xx - w / 2) / depth * 3).astype(int)) % 2
        img = np.where((yy > horizon)[..., None], _mix(c2, c3, checker.astype(np.float32)), _mix(c1, c2, t * 0.5))
    elif kind == "foliage":
        n = 0.7 * _smooth_noise(rng, h, w, (6, 4)) + 0.3 * _smooth_noise(rng, h, w, (24, 12))
        img = _mix(c1, c2, n)
    elif kind == "street":
        ground = h * rng.uniform(0.55, 0.7)
        wy, wx = h / rng.uniform(5, 8), w / rng.uniform(2, 4)
        windows = ((yy % wy) > wy * 0.45) & ((xx % wx) > wx * 0.4) & (yy < ground * 0.9)
        img = np.where(windows[..., None], np.asarray(c3, np.float32), _mix(c1, c1, t))
        img = np.where((yy > ground)[..., None], _mix(c2, c3, (yy > ground + h * 0.12) * 0.25), img)
    elif kind == "glass":
        pw = w / rng.uniform(2, 4)
        panel = (xx // pw) % 2
        reflect = ((xx + yy * rng.uniform(0.3, 0.8)) % (w * 0.6)) < w * 0.12
        img = _mix(c1, c2, 0.3 * panel + 0.5 * reflect)
    elif kind == "lamps":
        img = _mix(c1, c1, t) * (0.5 + 0.5 * t[..., None])
        for _ in range(int(rng.integers(2, 4))):
            cy, cx, radius = rng.uniform(0, h * 0.6), rng.uniform(0, w), rng.uniform(0.15, 0.35) * h
            glow = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius * radius))
            img = img + glow[..., None] * np.asarray(c2, np.float32)
    elif kind == "snow":
        ground = h * rng.uniform(0.5, 0.65)
        trunks = ((xx + rng.uniform(0, w)) % (w / rng.uniform(1.5, 3))) < w * 0.08
        sky = np.where(trunks[..., None], np.asarray(c2, np.float32) * 0.4, _mix(c1, c3, t))
        snow = 0.85 + 0.1 * _smooth_noise(rng, h, w, (12, 6))
        img = np.where((yy > ground)[..., None], snow[..., None], sky)
    elif kind == "tunnel":
        r = np.sqrt(((yy - h * 0.4) / h) ** 2 + ((xx - w / 2) / w) ** 2 * 0.5)
        lines = ((yy % (h / 8)) < 1.5) | ((xx % (w / 3)) < 1.5)
        img = _mix(c1, c2, np.clip(r * 2, 0, 1)) * np.where(lines, 0.7, 1.0)[..., None]
    else:  # plain
        img = _mix(c1, c2, t)
    fine = _smooth_noise(rng, h, w, (h // 3, w // 3)) - 0.5
    return np.clip(img + 0.06 * fine[..., None], 0, 1).astype(np.float32)


def _passers_by(rng: np.random.Generator, bg: np.ndarray, mean: float) -> None:
    """Blurry tall blobs at the sides: other pedestrians in the scene, in place."""
    h, w = bg.shape[:2]
    for _ in range(int(rng.poisson(mean))):
        bw, bh = int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(0.5, 0.9))
        x0 = int(rng.choice((-bw // 2, w - bw // 2))) + int(rng.integers(-w // 8, w // 8))
        y0 = h - bh - int(rng.integers(0, h // 8))
        xs, ys = slice(max(x0, 0), max(min(x0 + bw, w), 0)), slice(max(y0, 0), h)
        a = rng.uniform(0.6, 1.0)
        bg[ys, xs] = (1 - a) * bg[ys, xs] + a * np.asarray(hsv(rng, (0, 0.8), (0.1, 0.9)), np.float32)


# ------------------------------------------------------------------------------------------------ person


@dataclass(frozen=True)
class _Pose:
    cx: float  # supersampled pixels
    foot: float
    ph: float  # person height
    view: str
    stride: float  # fractions of ph
    swing: float
    facing: int  # side view: +1 faces right, -1 left


def _limb(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], w0: float, w1: float, fill: int):
    """A tapered quad from a (half-width w0) to b (half-width w1)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = max(float(np.hypot(dx, dy)), 1e-6)
    px, py = -dy / n, dx / n
    pts = [(a[0] + px * w0, a[1] + py * w0), (b[0] + px * w1, b[1] + py * w1)]
    pts += [(b[0] - px * w1, b[1] - py * w1), (a[0] - px * w0, a[1] - py * w0)]
    d.polygon(pts, fill=fill)


def _ellipse(d: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: int) -> None:
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


@dataclass(frozen=True)
class _Body:
    """Key heights and widths of one drawn person, in supersampled pixels."""

    u: float
    cx: float
    head_r: float
    head_y: float
    shoulder_y: float
    hip_y: float
    foot: float
    half_sh: float
    half_waist: float


def _body(p: Identity, pose: _Pose) -> _Body:
    u, top = pose.ph, pose.foot - pose.ph
    r = p.head * u
    half_sh = (0.075 if pose.view == "side" else 0.125) * p.width * u
    return _Body(
        u=u,
        cx=pose.cx,
        head_r=r,
        head_y=top + r,
        shoulder_y=top + 1.95 * r + 0.02 * u,
        hip_y=pose.foot - p.legs * u,
        foot=pose.foot,
        half_sh=half_sh,
        half_waist=half_sh * (0.95 if pose.view == "side" else 0.85),
    )


def _draw_legs(d: ImageDraw.ImageDraw, p: Identity, b: _Body, pose: _Pose) -> None:
    u, cx = b.u, b.cx
    if pose.view == "side":
        hips = (cx, cx)
        feet = (cx + pose.facing * pose.stride * u, cx - pose.facing * pose.stride * u * 0.8)
    else:
        off = b.half_waist * 0.5
        hips = (cx - off, cx + off)
        feet = (cx - off - pose.stride * u * 0.5, cx + off + pose.stride * u * 0.5)
    ankle = b.foot - 0.025 * u
    hw0, hw1 = 0.048 * p.width * u, 0.032 * p.width * u
    for hx, fx in zip(hips, feet, strict=True):
        _limb(d, (hx, b.hip_y), (fx, ankle), hw0, hw1, BOTTOM if p.bottom_kind == "trousers" else SKIN)
        if p.bottom_kind == "shorts":
            knee = (hx + 0.4 * (fx - hx), b.hip_y + 0.4 * (ankle - b.hip_y))
            _limb(d, (hx, b.hip_y), knee, hw0 * 1.1, hw0 * 1.05, BOTTOM)
        toe = pose.facing * 0.025 * u if pose.view == "side" else 0.0
        _ellipse(d, fx + toe, b.foot - 0.015 * u, (0.05 if pose.view == "side" else 0.034) * u, 0.02 * u, SHOES)
    crotch = b.hip_y + (0.42 * p.legs * u if p.bottom_kind == "skirt" else 0.07 * u)
    flare = 1.5 if p.bottom_kind == "skirt" else 0.85
    d.polygon(
        [
            (cx - b.half_waist, b.hip_y - 0.01 * u),
            (cx + b.half_waist, b.hip_y - 0.01 * u),
            (cx + b.half_waist * flare, crotch),
            (cx - b.half_waist * flare, crotch),
        ],
        fill=BOTTOM,
    )


def _draw_torso_arms(d: ImageDraw.ImageDraw, p: Identity, b: _Body, pose: _Pose) -> None:
    u, cx = b.u, b.cx
    hem = b.hip_y + (0.5 * p.legs * u if p.coat else 0.035 * u)
    flare = 1.2 if p.coat else 1.0
    d.polygon(
        [
            (cx - b.half_sh, b.shoulder_y),
            (cx + b.half_sh, b.shoulder_y),
            (cx + b.half_waist * flare, hem),
            (cx - b.half_waist * flare, hem),
        ],
        fill=TOP,
    )
    _ellipse(d, cx, b.shoulder_y + 0.02 * u, b.half_sh, 0.025 * u, TOP)  # rounded shoulders
    hand_y = b.hip_y + 0.05 * u
    if pose.view == "side":
        arms = [((cx, b.shoulder_y + 0.02 * u), (cx + pose.facing * pose.swing * u, hand_y))]
    else:
        arms = [
            ((cx + s * (b.half_sh - 0.025 * u), b.shoulder_y + 0.025 * u), (cx + s * (b.half_sh + 0.02 * u), hand_y))
            for s in (-1, 1)
        ]
    aw = 0.03 * p.width**0.5 * u
    for a, h in arms:
        _limb(d, a, h, aw, aw * 0.8, SKIN if p.short_sleeves else TOP)
        if p.short_sleeves:
            _limb(d, a, (a[0] + 0.35 * (h[0] - a[0]), a[1] + 0.35 * (h[1] - a[1])), aw * 1.1, aw * 1.05, TOP)
        _ellipse(d, h[0], h[1], aw * 0.9, aw, SKIN)


def _draw_head(d: ImageDraw.ImageDraw, p: Identity, b: _Body, pose: _Pose) -> None:
    cx, y, r, f = b.cx, b.head_y, b.head_r, pose.facing
    d.rectangle([cx - 0.3 * r, y, cx + 0.3 * r, b.shoulder_y + 0.01 * b.u], fill=SKIN)
    if pose.view == "front":
        if p.long_hair:
            d.rectangle([cx - 1.05 * r, y, cx + 1.05 * r, b.shoulder_y + 0.06 * b.u], fill=HAIR)
        _ellipse(d, cx, y - 0.08 * r, 1.02 * r, 1.05 * r, HAIR)
        _ellipse(d, cx, y + 0.15 * r, 0.82 * r, 0.88 * r, SKIN)
    elif pose.view == "back":
        _ellipse(d, cx, y, r, 1.05 * r, HAIR)
        if p.long_hair:
            d.rectangle([cx - 0.9 * r, y, cx + 0.9 * r, b.shoulder_y + 0.12 * b.u], fill=HAIR)
    else:
        if p.long_hair:
            x0, x1 = sorted((cx - f * 0.95 * r, cx - f * 0.1 * r))
            d.rectangle([x0, y, x1, b.shoulder_y + 0.1 * b.u], fill=HAIR)
        _ellipse(d, cx + f * 0.1 * r, y, 0.92 * r, r, SKIN)
        _ellipse(d, cx - f * 0.25 * r, y - 0.12 * r, 0.8 * r, 0.9 * r, HAIR)
    if p.hat is not None:
        d.chord([cx - 1.1 * r, y - 1.2 * r, cx + 1.1 * r, y + 0.5 * r], 180, 360, fill=HAT)
        if pose.view == "side":
            x0, x1 = sorted((cx, cx + f * 1.6 * r))
            d.rectangle([x0, y - 0.4 * r, x1, y - 0.25 * r], fill=HAT)


def _draw_logo(d: ImageDraw.ImageDraw, p: Identity, b: _Body) -> None:
    assert p.logo is not None
    shape, _, size = p.logo
    s, cx, cy = size * b.u / 2, b.cx, b.shoulder_y + 0.1 * b.u
    if shape == "square":
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=LOGO)
    elif shape == "circle":
        _ellipse(d, cx, cy, s, s, LOGO)
    elif shape == "triangle":
        d.polygon([(cx, cy - s), (cx + s, cy + s), (cx - s, cy + s)], fill=LOGO)
    else:
        d.polygon([(cx, cy - 1.3 * s), (cx + s, cy), (cx, cy + 1.3 * s), (cx - s, cy)], fill=LOGO)


def _draw_bag(d: ImageDraw.ImageDraw, p: Identity, b: _Body, pose: _Pose, behind: bool) -> None:
    """Backpacks show whole from the back, as straps from the front, beside the torso from the side."""
    u, cx, sy, f = b.u, b.cx, b.shoulder_y, pose.facing
    if p.bag == "backpack":
        if behind and pose.view == "side":
            x0, x1 = sorted((cx - f * (b.half_sh + 0.1 * u), cx - f * 0.5 * b.half_sh))
            d.rounded_rectangle([x0, sy + 0.01 * u, x1, sy + 0.27 * u], radius=0.02 * u, fill=BAG)
        elif not behind and pose.view == "back":
            half = 0.8 * b.half_sh
            d.rounded_rectangle([cx - half, sy + 0.02 * u, cx + half, sy + 0.28 * u], radius=0.03 * u, fill=BAG)
        elif not behind and pose.view == "front":
            for s in (-1, 1):
                _limb(
                    d,
                    (cx + s * 0.55 * b.half_sh, sy),
                    (cx + s * 0.6 * b.half_sh, sy + 0.2 * u),
                    0.012 * u,
                    0.012 * u,
                    BAG,
                )
        return
    if behind or p.bag == "none":
        return
    side = p.bag_side * (-1 if pose.view == "back" else 1)
    if pose.view == "side":
        bx = cx
    elif p.bag == "handbag":
        bx = cx + side * (b.half_sh + 0.02 * u)
    else:
        bx = cx + side * (b.half_sh + 0.035 * u)
    if p.bag == "handbag":
        by = b.hip_y + 0.1 * u
        d.rectangle([bx - 0.035 * u, by - 0.03 * u, bx + 0.035 * u, by + 0.04 * u], fill=BAG)
        return
    by = b.hip_y + 0.02 * u
    _limb(d, (cx - side * b.half_sh * 0.7, sy), (bx, by - 0.04 * u), 0.01 * u, 0.01 * u, BAG)
    d.rectangle([bx - 0.045 * u, by - 0.045 * u, bx + 0.045 * u, by + 0.05 * u], fill=BAG)


def _labels(p: Identity, pose: _Pose, size: tuple[int, int]) -> tuple[np.ndarray, _Body]:
    canvas = Image.new("L", (size[1], size[0]), BG)
    d = ImageDraw.Draw(canvas)
    b = _body(p, pose)
    _draw_bag(d, p, b, pose, behind=True)
    _draw_legs(d, p, b, pose)
    _draw_torso_arms(d, p, b, pose)
    if p.logo is not None and pose.view == "front":
        _draw_logo(d, p, b)
    _draw_bag(d, p, b, pose, behind=False)
    _draw_head(d, p, b, pose)
    return np.asarray(canvas), b


def _colourise(p: Identity, labels: np.ndarray, b: _Body, light: float, window: tuple[slice, slice]) -> np.ndarray:
    """Colours of the label map inside ``window``: palette, clothing pattern, shading."""
    pal = np.zeros((9, 3), np.float32)
    pal[SKIN], pal[HAIR], pal[TOP], pal[BOTTOM], pal[SHOES] = p.skin, p.hair, p.top, p.bottom, p.shoes
    pal[BAG], pal[HAT] = p.bag_colour, p.hat if p.hat is not None else p.hair
    if p.logo is not None:
        pal[LOGO] = p.logo[1]
    yy, xx = (g[window] for g in _grid(*labels.shape))
    labels = labels[window]
    rgb = pal[labels]
    if p.pattern != "plain":
        period = p.period * b.u
        rows = np.floor((yy - b.shoulder_y) / period)
        cols = np.floor((xx - b.cx) / period + 0.5)
        alt = {"hstripes": rows, "vstripes": cols, "checks": rows + cols}[p.pattern] % 2 == 1
        rgb[(labels == TOP) & alt] = p.top2
    # A lit cylinder: darker at the silhouette's sides, brighter towards the key light; legs in shadow.
    x = np.clip((xx - b.cx) / (b.half_sh * 1.5), -1, 1)
    shade = 1 - 0.35 * x * x + 0.15 * light * x
    shade = shade - 0.15 * np.clip((yy - b.hip_y) / (b.foot - b.hip_y), 0, 1)
    return rgb * shade[..., None]


def _downsample(a: np.ndarray, s: int) -> np.ndarray:
    """Box filter by ``s`` (strided sums are much faster than a mean over reshaped axes)."""
    acc = a[::s, ::s].copy()
    for i, j in ((i, j) for i in range(s) for j in range(s) if i or j):
        acc += a[i::s, j::s]
    return acc * np.float32(1 / (s * s))


def _person_layer(
    rng: np.random.Generator, p: Identity, cam: Camera, size: tuple[int, int], fragment: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied colour and coverage of one person at the output size."""
    h, w = size
    s = SUPERSAMPLE
    view = VIEWS[int(rng.choice(3, p=cam.views))]
    ph = rng.uniform(*cam.person_height) * p.height * h * s
    cx = w * s * (0.5 + rng.normal(0, 0.06))
    foot = h * s * (1 - rng.uniform(0, 0.05))
    if fragment:  # a bad detection: a zoomed-in or half-out-of-frame body part
        ph *= rng.uniform(1.5, 2.5)
        cx += rng.uniform(-0.5, 0.5) * w * s
        foot += rng.uniform(0, 0.6) * ph
    side = view == "side"
    pose = _Pose(
        cx=cx,
        foot=foot,
        ph=ph,
        view=view,
        stride=rng.uniform(0.06, 0.2) if side else rng.uniform(0.0, 0.08),
        swing=rng.uniform(-0.12, 0.12),
        facing=int(rng.choice((-1, 1))),
    )
    labels, body = _labels(p, pose, (h * s, w * s))
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    premult, cover = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    rows, cols = np.flatnonzero(labels.any(1)), np.flatnonzero(labels.any(0))
    if rows.size == 0:
        return premult, cover
    # Colour only the person's bounding box, aligned to the supersampling grid.
    y0, y1, x0, x1 = rows[0] // s, rows[-1] // s + 1, cols[0] // s, cols[-1] // s + 1
    window = (slice(y0 * s, y1 * s), slice(x0 * s, x1 * s))
    alpha = (labels[window] > 0).astype(np.float32)
    rgb = _colourise(p, labels, body, cam.light, window) * tint
    premult[y0:y1, x0:x1] = _downsample(rgb * alpha[..., None], s)
    cover[y0:y1, x0:x1] = _downsample(alpha, s)
    return premult, cover


def _occlude(rng: np.random.Generator, img: np.ndarray, colour: Colour) -> None:
    """A bench, car or pole in front of the person, in place."""
    h, w = img.shape[:2]
    tone = np.asarray(colour, np.float32) * rng.uniform(0.7, 1.1)
    if rng.uniform() < 0.6:
        top = int(h * (1 - rng.uniform(0.15, 0.35)))
        img[top:] = tone * np.linspace(1.0, 0.75, h - top, dtype=np.float32)[:, None, None]
    else:
        pw = max(2, int(w * rng.uniform(0.08, 0.15)))
        x0 = int(rng.integers(0, w - pw))
        img[:, x0 : x0 + pw] = tone * np.linspace(0.8, 1.1, pw, dtype=np.float32)[None, :, None]


def render_image(
    rng: np.random.Generator,
    cam: Camera,
    background: np.ndarray,
    size: tuple[int, int],
    person: Identity | None = None,
    fragment: bool = False,
) -> Image.Image:
    """One camera frame crop: scene, passers-by, the person, an occluder, then the camera's response."""
    h, w = size
    y0 = int(rng.integers(0, background.shape[0] - h + 1))
    x0 = int(rng.integers(0, background.shape[1] - w + 1))
    img = background[y0 : y0 + h, x0 : x0 + w].copy()
    _passers_by(rng, img, cam.clutter)
    if person is not None:
        premult, alpha = _person_layer(rng, person, cam, size, fragment)
        img = premult + (1 - alpha[..., None]) * img
    if rng.uniform() < cam.occlusion:
        _occlude(rng, img, cam.occluder)
    img = img * (np.asarray(cam.cast, np.float32) * cam.gain * rng.uniform(0.85, 1.15))
    img = np.clip((img - 0.45) * cam.contrast + 0.45, 0, 1) ** cam.gamma
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    radius = cam.blur * h / 128 * rng.uniform(0.7, 1.3)
    if radius > 0.15:
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    noisy = np.asarray(pil, np.float32) + rng.normal(0, cam.noise * 255, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

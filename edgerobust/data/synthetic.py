"""Built-in synthetic domains: a small, deterministic stand-in for Office-31 that needs no download.

Ten shape classes are photographed under three conditions that mimic Office-31's domains:

* ``studio``  (like Amazon): clean light background, centred, large, even lighting.
* ``webcam``  (like Webcam): low resolution, sensor noise, colour cast, lower contrast, blur.
* ``natural`` (like DSLR):  textured background, uneven lighting, random position, scale, rotation.

The shape decides the class; the colour is random in every domain so it is never a shortcut. Every
image is a function of ``(seed, domain, class, index)`` only, so generation is reproducible and
can be parallel. A model trained on one domain does clearly worse on the others
(``tests/test_synthetic.py`` shows it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edgerobust.errors import ConfigError

CLASSES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "diamond",
    "bars",
    "hexagon",
    "crescent",
)
DOMAINS = ("studio", "webcam", "natural")
_SS = 4  # supersampling factor: draw large, downsample, for anti-aliased edges


def _rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _polygon(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _draw_shape(
    draw: ImageDraw.ImageDraw, cls: str, cx: float, cy: float, r: float, rot: float, color: tuple
) -> None:
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif cls == "square":
        draw.polygon(_polygon(cx, cy, r * 1.1, 4, rot + math.pi / 4), fill=color)
    elif cls == "diamond":
        pts = [(cx, cy - r * 1.2), (cx + r * 0.7, cy), (cx, cy + r * 1.2), (cx - r * 0.7, cy)]
        c, s = math.cos(rot), math.sin(rot)
        draw.polygon(
            [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts],
            fill=color,
        )
    elif cls == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.15, 3, rot - math.pi / 2), fill=color)
    elif cls == "hexagon":
        draw.polygon(_polygon(cx, cy, r * 1.05, 6, rot), fill=color)
    elif cls == "star":
        pts = []
        for k in range(10):
            rad = r * 1.2 if k % 2 == 0 else r * 0.5
            a = rot - math.pi / 2 + math.pi * k / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=color)
    elif cls == "ring":
        w = r * 0.35
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(1, int(w)))
    elif cls == "cross":
        w = r * 0.38
        for a in (rot, rot + math.pi / 2):
            c, s = math.cos(a), math.sin(a)
            pts = [(-r, -w), (r, -w), (r, w), (-r, w)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts], fill=color)
    elif cls == "bars":
        c, s = math.cos(rot), math.sin(rot)
        for off in (-0.7, 0.0, 0.7):
            pts = [
                (-r, off * r - 0.18 * r),
                (r, off * r - 0.18 * r),
                (r, off * r + 0.18 * r),
                (-r, off * r + 0.18 * r),
            ]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts], fill=color)
    elif cls == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        dx, dy = 0.55 * r * math.cos(rot), 0.55 * r * math.sin(rot)
        # The "bite" is filled by the caller's background in a second pass (see _render).
        draw.ellipse(
            [cx + dx - r * 0.85, cy + dy - r * 0.85, cx + dx + r * 0.85, cy + dy + r * 0.85],
            fill=None,
        )
    else:  # pragma: no cover - CLASSES is closed
        raise ValueError(cls)


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    # Saturated colours of any hue, never close to the light studio background.
    h = rng.uniform(0, 1)
    v = rng.uniform(0.35, 0.85)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = 0.15 * v, v * (1 - 0.85 * f), v * (0.15 + 0.85 * f)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _texture(rng: np.random.Generator, n: int) -> Image.Image:
    """A cluttered but muted background: soft blobs and oriented stripes, lower contrast than
    the object so the shape stays the most salient thing in the picture."""
    base = rng.integers(120, 210, 3)
    img = Image.new("RGB", (n, n), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x, y = rng.uniform(0, n, 2)
        rad = rng.uniform(0.04, 0.12) * n
        col = tuple(int(c) for c in np.clip(base + rng.integers(-60, 60, 3), 0, 255))
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=col)
    img = img.filter(ImageFilter.GaussianBlur(n * 0.02))
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    a = rng.uniform(0, math.pi)
    stripes = np.sin((xx * math.cos(a) + yy * math.sin(a)) * rng.uniform(0.15, 0.5) / _SS)
    arr += stripes[..., None] * rng.uniform(5, 18)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _render(cls: str, domain: str, size: int, rng: np.random.Generator) -> Image.Image:
    n = size * _SS
    color = _random_color(rng)
    if domain == "natural":
        bg_img = _texture(rng, n)
        cx, cy = rng.uniform(0.36, 0.64, 2) * n
        r = rng.uniform(0.2, 0.3) * n
        rot = rng.uniform(-0.8, 0.8)
    else:
        # Studio backdrops: light, nearly neutral, slightly different from shot to shot.
        shade = rng.integers(200, 250) + rng.integers(-8, 9, 3)
        bg_img = Image.new("RGB", (n, n), tuple(int(c) for c in np.clip(shade, 0, 255)))
        cx, cy = (0.5 + rng.normal(0, 0.02, 2)) * n
        r = rng.uniform(0.30, 0.34) * n
        rot = rng.normal(0, 0.12)
    shape_layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    draw = ImageDraw.Draw(shape_layer)
    _draw_shape(draw, cls, cx, cy, r, rot, (*color, 255))
    if cls == "crescent":
        dx, dy = 0.55 * r * math.cos(rot), 0.55 * r * math.sin(rot)
        rr = r * 0.85
        draw.ellipse([cx + dx - rr, cy + dy - rr, cx + dx + rr, cy + dy + rr], fill=(0, 0, 0, 0))
    bg_img.paste(shape_layer, (0, 0), shape_layer)
    img = bg_img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32)
    if domain == "webcam":
        # Low resolution: the sensor sees about a third of the pixels.
        low = max(8, size // 3)
        img = Image.fromarray(arr.astype(np.uint8)).resize((low, low), Image.Resampling.BILINEAR)
        arr = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        cast = rng.uniform(0.75, 1.25, 3)  # white-balance error
        arr = (arr - 128) * rng.uniform(0.55, 0.8) + 128  # washed-out contrast
        arr = arr * cast + rng.normal(0, 14, arr.shape)  # sensor noise
    elif domain == "natural":
        yy, xx = np.mgrid[0:size, 0:size] / size
        a = rng.uniform(0, 2 * math.pi)
        light = 1 + rng.uniform(0.25, 0.5) * (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) * 2
        arr = arr * light[..., None] * rng.uniform(0.75, 1.15)
    else:
        arr = arr + rng.normal(0, 2, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def make_image(cls: str, domain: str, index: int, *, size: int = 64, seed: int = 0) -> Image.Image:
    """One image of class ``cls`` in ``domain``; a pure function of its arguments."""
    if cls not in CLASSES:
        raise ConfigError(f"unknown synthetic class {cls!r}: choose from {', '.join(CLASSES)}")
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r}: choose from {', '.join(DOMAINS)}")
    return _render(cls, domain, size, _rng(seed, domain, cls, index))


def make_synthetic(
    root: str | Path,
    *,
    per_class: int = 40,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
    domains: Sequence[str] = DOMAINS,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``ROOT/DOMAIN/CLASS/NNNN.png`` and return ``root``. Existing identical files are kept."""
    if per_class < 2:
        raise ConfigError(f"per_class must be >= 2, got {per_class}")
    if size < 16:
        raise ConfigError(f"size must be >= 16 pixels, got {size}")
    root = Path(root)
    jobs = [(d, c, i) for d in domains for c in classes for i in range(per_class)]
    for done, (d, c, i) in enumerate(jobs, 1):
        path = root / d / c / f"{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            make_image(c, d, i, size=size, seed=seed).save(tmp, format="PNG")
            tmp.replace(path)
        if progress and (done % 50 == 0 or done == len(jobs)):
            progress(done, len(jobs))
    (root / "SOURCE.txt").write_text(
        f"edgerobust synthetic domains: seed={seed} size={size} per_class={per_class}\n"
        f"domains={','.join(domains)} classes={','.join(classes)}\n"
    )
    return root

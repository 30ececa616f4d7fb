"""The ToyWorld exemplar pictures: frame-filling materials and coloured shapes, numpy only.

Every picture is an ``[S, S, 3]`` float array in [0, 1] drawn from its own generator, seeded by
``(seed, class, index)``: a picture never depends on how many others were made, so asking for
more exemplars keeps the first ones. grass, brick and gravel are crops of three CC0 photographs
from scikit-image's sample data, shipped with this package (``textures/``, see its README.txt), so
the default pictures are the same whether or not scikit-image is installed; ``"procedural"`` draws
them instead.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

MATERIALS = ("sky", "night", "sun", "water", "grass", "brick", "gravel", "sand")
COLOURS = {"red": (0.90, 0.12, 0.10), "green": (0.15, 0.72, 0.20),
           "blue": (0.15, 0.32, 0.95), "yellow": (0.95, 0.85, 0.12)}
SHAPES = ("circle", "square", "triangle")
VOCABULARY = MATERIALS + tuple(COLOURS) + SHAPES
# One class per label set: each material alone, every colour with every shape.
CLASSES = tuple(frozenset([m]) for m in MATERIALS) + tuple(
    frozenset([c, s]) for c in COLOURS for s in SHAPES)
PHOTO_MATERIALS = ("grass", "brick", "gravel")
TEXTURES = ("auto", "procedural", "skimage")  # "skimage": scikit-image's photographs (shipped here)
PHOTO_DIR = Path(__file__).with_name("textures")


def resolve_textures(textures: str) -> str:
    """``"auto"`` -> ``"skimage"`` (the shipped photographs), in every environment."""
    if textures not in TEXTURES:
        raise ValueError(f"textures: expected one of {', '.join(TEXTURES)}, got {textures!r}")
    return "skimage" if textures == "auto" else textures


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """The 512x512 uint8 grey photograph ``name`` (grass, brick, gravel), read-only."""
    from PIL import Image

    with Image.open(PHOTO_DIR / f"{name}.png") as image:
        grey = np.asarray(image.convert("L"))
    grey.setflags(write=False)
    return grey


def make_exemplars(seed: int, n: int, size: int, textures: str):
    """``n`` pictures ``[n, size, size, 3]`` (float32) and their label sets, classes interleaved."""
    textures = resolve_textures(textures)
    per_class = [n // len(CLASSES) + (k < n % len(CLASSES)) for k in range(len(CLASSES))]
    images, labels = [], []
    for k, labels_k in enumerate(CLASSES):
        for j in range(per_class[k]):
            rng = np.random.default_rng([seed, k, j])
            images.append(_draw(labels_k, rng, size, textures))
            labels.append(labels_k)
    return np.clip(np.stack(images), 0, 1).astype(np.float32), tuple(labels)


def _draw(labels, rng, size, textures):
    (word,) = labels if len(labels) == 1 else (None,)
    if word is None:
        colour, shape = sorted(labels, key=lambda w: w in SHAPES)
        return _shape(rng, size, colour, shape)
    if word in PHOTO_MATERIALS and textures == "skimage":
        return _photo(rng, size, word)
    return _PROCEDURAL[word](rng, size)


# -- noise helpers ------------------------------------------------------------------------------

def _value_noise(rng, size, cells_y, cells_x=None):
    """Smooth noise: a random grid interpolated with a smoothstep, std ~1."""
    cells_x = cells_y if cells_x is None else cells_x
    grid = rng.standard_normal((cells_y + 1, cells_x + 1))

    def axis(cells):
        t = (np.arange(size) + 0.5) * cells / size
        i = np.minimum(t.astype(int), cells - 1)
        f = t - i
        return i, f * f * (3 - 2 * f)

    (iy, fy), (ix, fx) = axis(cells_y), axis(cells_x)
    rows = grid[iy] * (1 - fy)[:, None] + grid[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fractal(rng, size, base_cells=2, octaves=4):
    out = sum(0.5 ** o * _value_noise(rng, size, base_cells * 2 ** o) for o in range(octaves))
    return out / out.std()


def _jitter(rng, colour, amount=0.06):
    return np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 1)


def _lerp(a, b, t):
    t = np.asarray(t)[..., None]
    return np.asarray(a) * (1 - t) + np.asarray(b) * t


def _coords(size):
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return y / size, x / size


# -- materials ------------------------------------------------------------------------------------

def _sky(rng, size):
    y, _ = _coords(size)
    base = _lerp(_jitter(rng, (0.12, 0.32, 0.78)), _jitter(rng, (0.62, 0.80, 0.96)),
                 y ** rng.uniform(0.8, 1.6))
    clouds = np.clip((_fractal(rng, size, 2) - rng.uniform(0.2, 1.2)) * 0.8, 0, 1)
    return _lerp(base, _jitter(rng, (0.96, 0.96, 0.98), 0.03), clouds)


def _night(rng, size):
    y, _ = _coords(size)
    image = _lerp(_jitter(rng, (0.01, 0.02, 0.08), 0.02), _jitter(rng, (0.06, 0.08, 0.22), 0.04), y)
    stars = rng.random((size, size)) < rng.uniform(0.004, 0.012)
    brightness = rng.uniform(0.5, 1.0, (size, size))[..., None]
    return np.where(stars[..., None], brightness * np.array([1.0, 0.97, 0.85]), image)


def _sun(rng, size):
    y, x = _coords(size)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = np.hypot(y - cy, x - cx) / rng.uniform(0.35, 0.6)
    core, mid, outer = (1.0, 0.98, 0.85), _jitter(rng, (1.0, 0.80, 0.20)), _jitter(rng, (0.95, 0.45, 0.08))
    inner = _lerp(core, mid, np.clip(r / 0.5, 0, 1))
    return _lerp(inner, outer, np.clip((r - 0.5) / 1.0, 0, 1))


def _water(rng, size):
    y, x = _coords(size)
    base = _lerp(_jitter(rng, (0.05, 0.28, 0.50)), _jitter(rng, (0.02, 0.16, 0.35)), y)
    warp = 0.06 * _value_noise(rng, size, 2, 4)
    ripples = np.sin(2 * np.pi * (y * rng.uniform(6, 12) + warp + rng.random()))
    highlight = np.clip((ripples - 0.55) * 2.2, 0, 1) * rng.uniform(0.5, 0.9)
    return _lerp(base, (0.65, 0.85, 0.95), highlight)


def _grass(rng, size):
    blades = _value_noise(rng, size, size // 8, size // 2)  # tall thin streaks
    patches = _fractal(rng, size, 2, 3)
    t = np.clip(0.5 + 0.22 * blades + 0.12 * patches, 0, 1)
    return _lerp(_jitter(rng, (0.06, 0.24, 0.04), 0.03), _jitter(rng, (0.45, 0.78, 0.25)), t)


def _brick(rng, size):
    y, x = np.mgrid[0:size, 0:size] + 0.5
    height = size / rng.uniform(6, 10)
    row = np.floor(y / height)
    shifted = x / (2.2 * height) + 0.5 * (row % 2) + rng.random()
    col = np.floor(shifted)
    mortar = (y % height < 1.0) | (shifted % 1 < 1.0 / (2.2 * height))
    ids = (row * 131 + col).astype(int) % 97
    shades = rng.uniform(-0.08, 0.08, 97)[ids]
    brick = _jitter(rng, (0.62, 0.27, 0.17)) + shades[..., None] + 0.03 * _fractal(rng, size, 8)[..., None]
    return np.where(mortar[..., None], _jitter(rng, (0.78, 0.76, 0.70), 0.04), brick)


def _gravel(rng, size):
    y, x = _coords(size)
    n = int(rng.integers(40, 80))
    points = rng.random((n, 2))
    d = np.hypot(y.reshape(-1, 1) - points[:, 0], x.reshape(-1, 1) - points[:, 1])
    shade = rng.uniform(0.35, 0.75, n)[d.argmin(axis=1)].reshape(size, size)  # one shade a stone
    d.sort(axis=1)
    edge = np.clip((d[:, 1] - d[:, 0]) * size / 1.5, 0, 1).reshape(size, size)  # dark cracks
    base = _jitter(rng, (1.0, 0.95, 0.88), 0.05)
    return shade[..., None] * base * (0.35 + 0.65 * edge[..., None])


def _sand(rng, size):
    y, x = _coords(size)
    dunes = np.sin(2 * np.pi * (y * rng.uniform(3, 6) + 0.25 * x + 0.1 * _value_noise(rng, size, 3)))
    grain = rng.standard_normal((size, size)) * 0.03
    t = np.clip(0.5 + 0.15 * dunes + grain, 0, 1)
    return _lerp(_jitter(rng, (0.70, 0.55, 0.34)), _jitter(rng, (0.93, 0.82, 0.60)), t)


_PROCEDURAL = {"sky": _sky, "night": _night, "sun": _sun, "water": _water, "grass": _grass,
               "brick": _brick, "gravel": _gravel, "sand": _sand}


# -- photographs (scikit-image's CC0 textures, shipped in textures/) ------------------------------

_PHOTO_TINTS = {  # dark, middle, light colours mapped onto the photo's grey quantiles
    "grass": ((0.04, 0.16, 0.03), (0.22, 0.50, 0.10), (0.62, 0.85, 0.35)),
    "brick": ((0.35, 0.12, 0.07), (0.64, 0.28, 0.17), (0.84, 0.81, 0.74)),
    "gravel": ((0.12, 0.11, 0.10), (0.47, 0.44, 0.40), (0.86, 0.84, 0.80)),
}


def _photo(rng, size, name):
    grey = photo(name).astype(np.float64) / 255
    if name == "brick":
        grey = grey.T  # the photo's courses run vertically; walls read better horizontal
    factor = int(rng.integers(2, 5)) if grey.shape[0] >= 4 * size else 1
    crop = size * factor
    top, left = rng.integers(0, grey.shape[0] - crop + 1), rng.integers(0, grey.shape[1] - crop + 1)
    patch = grey[top:top + crop, left:left + crop].reshape(size, factor, size, factor).mean((1, 3))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if name != "brick" and rng.random() < 0.5:
        patch = patch[::-1]
    stops = np.quantile(patch, [0.02, 0.5, 0.98])
    colours = np.array([_jitter(rng, c, 0.04) for c in _PHOTO_TINTS[name]])
    return np.stack([np.interp(patch, stops, colours[:, ch]) for ch in range(3)], axis=-1)


# -- shapes ---------------------------------------------------------------------------------------

def _shape(rng, size, colour, shape):
    y, x = np.mgrid[0:size, 0:size] + 0.5
    background = _lerp(_jitter(rng, (0.07, 0.07, 0.09), 0.04), _jitter(rng, (0.03, 0.03, 0.04), 0.03),
                       y / size)
    r = size * rng.uniform(0.16, 0.30)
    cy, cx = rng.uniform(r * 1.1, size - r * 1.1, 2)
    dy, dx = y - cy, x - cx
    if shape == "circle":
        inside = r - np.hypot(dy, dx)
    elif shape == "square":
        inside = 0.85 * r - np.maximum(abs(dy), abs(dx))
    else:  # an upward equilateral triangle: three half-planes around its centre
        normals = [(1.0, 0.0), (-0.5, 3 ** 0.5 / 2), (-0.5, -(3 ** 0.5) / 2)]
        inside = np.min([0.5 * r - (dy * ny + dx * nx) for ny, nx in normals], axis=0)
    coverage = np.clip(inside + 0.5, 0, 1)  # one-pixel antialiased edge
    return _lerp(background, _jitter(rng, COLOURS[colour]), coverage)

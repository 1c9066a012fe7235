"""A network's input pipeline: geometry (resize, centre crop), interpolation, scaling, mean/std.

A sidecar's ``preprocess`` entry either names a framework's evaluation transform with
``"preset"`` -- ``"torchvision"`` (``Resize`` + ``CenterCrop``, as ``weights.transforms()``),
``"timm"`` (``transforms_imagenet_eval``: ``crop_pct``, ``crop_mode``) or ``"tf"`` (TensorFlow's
central crop of a fraction of the image, then resize) -- whose box arithmetic it reproduces
exactly, or spells the geometry out with ``crop`` / ``resize`` / ``crop_fraction``. Resizing
uses Pillow's filters, as torchvision and timm do on PIL images. Training views add seeded
random resized crops and flips (:class:`Augment`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LintwinError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "Augment", "Preprocess", "augment_from_options", "json_int",
           "pixels_limit", "random_resized_box"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("torchvision", "timm", "tf")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
_CROPS = ("resize_then_center_crop", "center_crop_then_resize")
_TIMM_CROP_MODES = ("center", "squash")
_KEYS = {"size", "channels", "resize", "mean", "std", "channel_order", "interpolation", "crop", "crop_fraction",
         "preset", "crop_pct", "crop_mode"}
# Keys each preset takes (besides size, channels, channel_order, interpolation, mean, std).
_PRESET_KEYS = {"torchvision": {"resize"}, "timm": {"crop_pct", "crop_mode"}, "tf": {"crop_pct"}}
_DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT; 224 / 256 as in the TF EfficientNet evaluation


def _resample(name: str) -> Image.Resampling:
    return getattr(Image.Resampling, name.upper())


@dataclass(frozen=True)
class Augment:
    """Training views: random resized crops (as torchvision's RandomResizedCrop) and horizontal flips.

    ``scale`` bounds the crop's share of the image area, ``ratio`` its aspect (width / height);
    with ``centre_view`` view 0 of every image is the plain (unaugmented) preprocessing.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    centre_view: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise LintwinError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1] and math.isfinite(self.ratio[1])):
            raise LintwinError(f"augmentation ratio must satisfy 0 < min <= max < inf, got {self.ratio}")

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def augment_from_options(augment: bool, *, scale: tuple[float, float] | None = None,
                         ratio: tuple[float, float] | None = None, flip: bool | None = None,
                         centre_view: bool = False) -> Augment | None:
    """The augmentation ``extract``'s options ask for (None without ``--augment``).

    A setting given without ``--augment`` would be silently ignored, so it is refused, as
    ``--views`` above 1 is.
    """
    given = [opt for opt, value in (("--scale", scale), ("--ratio", ratio), ("--flip/--no-flip", flip),
                                    ("--centre-view", centre_view or None)) if value is not None]
    if not augment:
        if given:
            raise LintwinError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to augmented views: "
                               "add --augment, or drop the option")
        return None
    default = Augment()
    return Augment(scale=scale or default.scale, ratio=ratio or default.ratio,
                   flip=default.flip if flip is None else flip, centre_view=centre_view)


def pixels_limit(h: int, w: int, what: str) -> None:
    """Refuse image sizes Pillow would refuse as decompression bombs (more than ``MAX_IMAGE_PIXELS``)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and h * w > limit:
        raise LintwinError(f"{what}: {h} x {w} = {h * w} pixels, more than Pillow's limit of {limit} pixels")


def json_int(value: Any, key: str) -> int:
    """A sidecar integer: a JSON integer, not a fraction (128.7 is not 128), a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LintwinError(f"{key} must be a whole number, got {value!r}")
    return value


@dataclass(frozen=True)
class Preprocess:
    """A network's input pipeline, from its sidecar's ``preprocess`` entry.

    ``crop`` is ``resize_then_center_crop`` (resize by ``resize``, then a centre crop of
    ``size``, as torchvision's Resize + CenterCrop) or ``center_crop_then_resize`` (a centre
    crop of ``crop_fraction`` of the shorter side with the aspect of ``size``, then resized to
    ``size``, as TF evaluation pipelines do). ``resize`` is the shorter side (an int) or the
    exact ``(height, width)``. ``preset`` (with ``crop_pct`` and ``crop_mode`` for timm) records
    which framework's transform the geometry reproduces; :meth:`from_dict` derives the rest.
    Pixels are converted to ``channels`` (1 = grey, 3 = RGB/BGR by ``channel_order``), then
    ``(x / 255 - mean) / std`` per channel, in NCHW float32. ``size`` is (height, width).
    """

    size: tuple[int, int]
    channels: int = 3
    resize: int | tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    interpolation: str = "bilinear"
    crop: str = "resize_then_center_crop"
    crop_fraction: float | None = None
    preset: str | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 1 or w < 1:
            raise LintwinError(f"preprocess size must be positive, got {list(self.size)}")
        if self.channels not in (1, 3):
            raise LintwinError(f"preprocess channels must be 1 or 3, got {self.channels}")
        for key in ("mean", "std"):
            v = getattr(self, key)
            if len(v) not in (1, self.channels):
                raise LintwinError(f"preprocess {key} needs 1 or {self.channels} values, got {len(v)}")
        if any(not s > 0 for s in self.std):
            raise LintwinError(f"preprocess std must be positive, got {list(self.std)}")
        if self.channel_order.upper() not in ("RGB", "BGR"):
            raise LintwinError(f"preprocess channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise LintwinError(f"preprocess interpolation must be one of {', '.join(_INTERPOLATIONS)}, "
                               f"got {self.interpolation!r}")
        if self.crop not in _CROPS:
            raise LintwinError(f"preprocess crop must be one of {', '.join(_CROPS)}, got {self.crop!r}")
        if self.crop == "center_crop_then_resize":
            if self.crop_fraction is None or not 0 < self.crop_fraction <= 1:
                raise LintwinError("crop center_crop_then_resize needs crop_fraction in (0, 1], "
                                   f"got {self.crop_fraction}")
            if self.resize is not None:
                raise LintwinError("crop center_crop_then_resize takes crop_fraction, not resize")
        elif self.crop_fraction is not None:
            raise LintwinError("crop_fraction belongs to crop center_crop_then_resize")
        if isinstance(self.resize, int) and self.resize < max(self.size):
            raise LintwinError(f"preprocess resize {self.resize} is smaller than the crop size {list(self.size)}")
        if isinstance(self.resize, tuple) and (self.resize[0] < h or self.resize[1] < w):
            raise LintwinError(f"preprocess resize {list(self.resize)} is smaller than the crop size {list(self.size)}")
        if self.preset is not None and self.preset not in PRESETS:
            raise LintwinError(f"preprocess preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise LintwinError(f"preprocess crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.crop_mode is not None and self.crop_mode not in _TIMM_CROP_MODES:
            raise LintwinError(f"preprocess crop_mode must be one of {', '.join(_TIMM_CROP_MODES)}, "
                               f"got {self.crop_mode!r}")
        pixels_limit(h, w, "preprocess size")
        if self.resize is not None:
            rh, rw = (self.resize, self.resize) if isinstance(self.resize, int) else self.resize
            pixels_limit(rh, rw, "preprocess resize")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """From a sidecar's ``preprocess`` entry; unknown keys are refused (a typo would go unseen)."""
        if not isinstance(d, dict):
            raise LintwinError(f"preprocess must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - _KEYS)
        if unknown:
            raise LintwinError(f"unknown preprocess key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        if "size" not in d:
            raise LintwinError("preprocess needs size [height, width]")
        preset = d.get("preset")
        try:
            size = _hw(d["size"], "size")
            resize = None if d.get("resize") is None else (
                json_int(d["resize"], "preprocess resize") if isinstance(d["resize"], (int, float))
                else _hw(d["resize"], "resize"))
            channels = json_int(d.get("channels", 3), "preprocess channels")
            frac = None if d.get("crop_fraction") is None else float(d["crop_fraction"])
            default_norm = (IMAGENET_MEAN, IMAGENET_STD) if preset in ("torchvision", "timm") else \
                ((0.5,), (0.5,)) if preset == "tf" else ((0.0,), (1.0,))
            mean = tuple(float(v) for v in d.get("mean", default_norm[0]))
            std = tuple(float(v) for v in d.get("std", default_norm[1]))
            crop_pct = None if d.get("crop_pct") is None else float(d["crop_pct"])
        except (TypeError, ValueError) as exc:
            raise LintwinError(f"preprocess has a value of the wrong type ({exc})") from None
        common = {"size": size, "channels": channels, "mean": mean, "std": std,
                  "channel_order": str(d.get("channel_order", "RGB")),
                  "interpolation": str(d.get("interpolation", "bilinear"))}
        if preset is None:
            for key in ("crop_pct", "crop_mode"):
                if key in d:
                    raise LintwinError(f"preprocess {key} belongs to a preset (\"preset\": \"timm\" or \"tf\")")
            return cls(**common, resize=resize, crop=str(d.get("crop", "resize_then_center_crop")),
                       crop_fraction=frac)
        if preset not in PRESETS:
            raise LintwinError(f"preprocess preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        foreign = sorted(set(d) - {"preset", "size", "channels", "channel_order", "interpolation", "mean", "std"}
                         - _PRESET_KEYS[preset])
        if foreign:
            raise LintwinError(f"preset {preset} does not take {', '.join(foreign)} (it takes "
                               f"{', '.join(sorted(_PRESET_KEYS[preset]))} besides size, interpolation, mean, std)")
        if preset == "torchvision":  # ImageClassification(crop_size, resize_size=256); "resize": null = no Resize
            return cls(**common, resize=256 if "resize" not in d else resize, preset=preset)
        pct = _DEFAULT_CROP_PCT if crop_pct is None else crop_pct
        if not 0 < pct <= 1:
            raise LintwinError(f"preprocess crop_pct must be in (0, 1], got {pct}")
        if preset == "tf":
            return cls(**common, crop="center_crop_then_resize", crop_fraction=pct, preset=preset, crop_pct=pct)
        mode = str(d.get("crop_mode", "center"))
        scale = (math.floor(size[0] / pct), math.floor(size[1] / pct))  # timm: floor(img_size / crop_pct)
        timm_resize: int | tuple[int, int] = scale[0] if mode == "center" and scale[0] == scale[1] else scale
        return cls(**common, resize=timm_resize, preset=preset, crop_pct=pct, crop_mode=mode)

    def as_dict(self) -> dict[str, Any]:
        """Every setting that shapes the pixels (what produced the features); preset keys only when set."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key in ("preset", "crop_pct", "crop_mode"):
            if d[key] is None:
                del d[key]
        return d

    # -- geometry ---------------------------------------------------------------------
    def resized_size(self, w: int, h: int) -> tuple[int, int]:
        """The image's (width, height) after the resize step of ``resize_then_center_crop``.

        An int ``resize`` is the shorter side, the long side ``int(resize * long / short)``
        (torchvision's ``Resize(int)``); a pair is the exact size (``Resize((h, w))``, timm's
        ``squash``) -- except for timm's ``center`` mode with a non-square target, which keeps
        the aspect: both sides divided by ``min(h / H, w / W)`` and rounded (``ResizeKeepRatio``).
        """
        if self.resize is None:
            return w, h
        if isinstance(self.resize, int):
            if w <= h:
                return self.resize, int(self.resize * h / w)
            return int(self.resize * w / h), self.resize
        rh, rw = self.resize
        if self.preset == "timm" and self.crop_mode == "center":
            ratio = min(h / rh, w / rw)
            return round(w / ratio), round(h / ratio)
        return rw, rh

    def center_box(self, w: int, h: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """The plain view: ``(resized (w, h) or the image's, crop box (left, top, right, bottom))``.

        For ``resize_then_center_crop`` the box is in the resized image (torchvision's
        ``CenterCrop``: offsets ``int(round((W - w) / 2))``); for ``center_crop_then_resize`` in the
        original (TF's arithmetic: crop side ``int(fraction * short)``, offsets ``(W - w + 1) // 2``).
        """
        th, tw = self.size
        if self.crop == "center_crop_then_resize":
            assert self.crop_fraction is not None
            if h * tw <= w * th:  # height limits the box
                ch, cw = int(self.crop_fraction * h), int(self.crop_fraction * h * tw / th)
            else:
                cw, ch = int(self.crop_fraction * w), int(self.crop_fraction * w * th / tw)
            ch, cw = max(ch, 1), max(cw, 1)
            top, left = (h - ch + 1) // 2, (w - cw + 1) // 2
            return (w, h), (left, top, left + cw, top + ch)
        w, h = self.resized_size(w, h)
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return (w, h), (left, top, left + tw, top + th)

    def pixels(self, img: np.ndarray, rng: np.random.Generator | None = None,
               augment: Augment | None = None) -> np.ndarray:
        """One image (H x W x C uint8) to the network's view as uint8 (h x w x channels)."""
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        pil = pil.convert("L" if self.channels == 1 else "RGB")
        th, tw = self.size
        filt = _resample(self.interpolation)
        if rng is not None:
            augment = augment or Augment()
            box = random_resized_box(pil.size[0], pil.size[1], rng, augment.scale, augment.ratio)
            pil = pil.crop(box).resize((tw, th), filt)
            if augment.flip and rng.random() < 0.5:
                pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            size, box = self.center_box(*pil.size)
            if self.crop == "center_crop_then_resize":
                pil = pil.crop(box).resize((tw, th), filt)
            else:
                if size != pil.size:
                    pixels_limit(size[1], size[0], f"image of {pil.size[0]} x {pil.size[1]} resized")
                    pil = pil.resize(size, filt)
                if box != (0, 0) + pil.size:
                    pil = pil.crop(box)
        x = np.asarray(pil, dtype=np.uint8)
        return x[..., None] if x.ndim == 2 else x

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 views (N x h x w x C) to the network's input (N x C x h x w float32)."""
        x = np.transpose(batch.astype(np.float32) / np.float32(255.0), (0, 3, 1, 2))
        if self.channels == 3 and self.channel_order.upper() == "BGR":
            x = x[:, ::-1]
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None,
                 augment: Augment | None = None) -> np.ndarray:
        """One image (H x W x C uint8) to a (C x h x w) float32 array; ``rng`` adds augmentation."""
        return self.normalize(self.pixels(img, rng, augment)[None])[0]


def _hw(value: Any, key: str) -> tuple[int, int]:
    """``[height, width]``, or one int for a square."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        side = json_int(value, f"preprocess {key}")
        return side, side
    hw = tuple(json_int(v, f"preprocess {key}") for v in value)
    if len(hw) != 2:
        raise LintwinError(f"preprocess {key} must be [height, width] or one number, got {value}")
    return hw  # type: ignore[return-value]


def random_resized_box(w: int, h: int, rng: np.random.Generator, scale: tuple[float, float],
                       ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params with a NumPy generator: (left, top, right, bottom)."""
    area = w * h
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_ratio[0], log_ratio[1])))
        cw, ch = round(np.sqrt(target * aspect)), round(np.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return left, top, left + cw, top + ch
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        ch, cw = h, round(h * max(ratio))
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return left, top, left + cw, top + ch

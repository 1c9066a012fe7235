"""Image sources and preprocessing: folders (CSV or sub-folder labels), array files, IDX files.

Every source is an ordered list of samples with a label and an id; pixels come out as
uint8 arrays (H x W x C). Preprocessing follows a network's sidecar (resize, centre crop,
scale, mean/std, channel order); training views add seeded random resized crops and flips,
seeded per (image, view) so that any run reproduces the same pixels.
"""

from __future__ import annotations

import csv
import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LintwinError

__all__ = ["ImageSet", "Preprocess", "concat_images", "open_images", "read_idx"]

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (as used by MNIST / Fashion-MNIST), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LintwinError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise LintwinError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise LintwinError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, got {arr.size}")
    return arr.reshape(shape)


@dataclass
class ImageSet:
    """An ordered set of images with integer labels (-1 where unknown) and string ids.

    Either ``arrays`` (N x H x W [x C] uint8) or ``files`` is set. ``skipped`` lists
    files that could not be decoded and were left out.
    """

    ids: list[str]
    labels: np.ndarray
    files: list[Path] | None = None
    arrays: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    description: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> np.ndarray:
        """Pixels of image ``i`` as uint8 (H x W x C)."""
        if self.arrays is not None:
            img = self.arrays[i]
            return img[..., None] if img.ndim == 2 else img
        from PIL import Image

        assert self.files is not None
        with Image.open(self.files[i]) as im:
            return np.asarray(im.convert("RGB"))

    def subset(self, index: Sequence[int] | np.ndarray) -> "ImageSet":
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            ids=[self.ids[i] for i in index],
            labels=self.labels[index],
            files=[self.files[i] for i in index] if self.files is not None else None,
            arrays=self.arrays[index] if self.arrays is not None else None,
            skipped=list(self.skipped),
            description=f"{self.description}[{len(index)} selected]",
        )


def open_images(spec: str | Path, *, labels_csv: str | Path | None = None) -> ImageSet:
    """Open an image source.

    - a directory with a CSV of (file, label) -- ``labels_csv``, or ``labels.csv`` inside it,
      whose label column is ``label`` or ``class_index``;
    - a directory of class sub-folders (labels are the sorted folder names' indices);
    - an ``.npz`` file with ``images`` (N x H x W [x C], uint8) and ``labels``;
    - an IDX images file (``*-images-idx3-ubyte[.gz]``) with its labels file beside it.
    """
    path = Path(spec)
    if not path.exists():
        raise LintwinError(f"no images at {path}")
    if path.is_dir():
        csv_path = Path(labels_csv) if labels_csv else path / "labels.csv"
        if csv_path.is_file():
            return _from_csv(path, csv_path)
        return _from_subfolders(path)
    if path.suffix == ".npz":
        return _from_npz(path)
    if "idx3-ubyte" in path.name:
        return _from_idx(path)
    raise LintwinError(f"{path}: expected an image folder, an .npz of images, or an IDX images file")


def _from_npz(path: Path) -> ImageSet:
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z.files:
            raise LintwinError(f"{path} has no 'images' array (it has {', '.join(z.files)})")
        images = z["images"]
        labels = z["labels"] if "labels" in z.files else np.full(len(images), -1)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise LintwinError(f"{path}: images must be uint8 N x H x W [x C], got {images.dtype} {images.shape}")
    ids = [f"{path.name}:{i}" for i in range(len(images))]
    return ImageSet(ids, labels.astype(np.int64), arrays=images, description=str(path))


def _from_idx(path: Path) -> ImageSet:
    labels_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    images = read_idx(path)
    labels = read_idx(labels_path) if labels_path.exists() else np.full(len(images), -1)
    if len(labels) != len(images):
        raise LintwinError(f"{labels_path} has {len(labels)} labels for {len(images)} images")
    ids = [f"{path.name}:{i}" for i in range(len(images))]
    return ImageSet(ids, labels.astype(np.int64), arrays=images, description=str(path))


def _usable(files: list[Path]) -> tuple[list[Path], list[str]]:
    """Drop files Pillow cannot decode; return (kept, skipped names)."""
    from PIL import Image

    kept, skipped = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
            kept.append(f)
        except Exception:  # Pillow raises many types for corrupt or non-image files
            skipped.append(f.name)
    return kept, skipped


def _from_csv(root: Path, csv_path: Path) -> ImageSet:
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "file" not in rows[0]:
        raise LintwinError(f"{csv_path} needs a 'file' column and a 'label' or 'class_index' column")
    key = "label" if "label" in rows[0] else "class_index" if "class_index" in rows[0] else None
    if key is None:
        raise LintwinError(f"{csv_path} needs a 'label' or 'class_index' column")
    by_file = {r["file"]: int(r[key]) for r in rows}
    files = [root / r["file"] for r in rows if (root / r["file"]).is_file()]
    missing = [r["file"] for r in rows if not (root / r["file"]).is_file()]
    kept, skipped = _usable(files)
    return ImageSet([f.name for f in kept], np.array([by_file[f.name] for f in kept], dtype=np.int64),
                    files=kept, skipped=missing + skipped, description=str(root))


def _from_subfolders(root: Path) -> ImageSet:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        files = sorted(f for f in root.iterdir() if f.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise LintwinError(f"{root} holds no images, class folders or labels.csv")
        kept, skipped = _usable(files)
        return ImageSet([f.name for f in kept], np.full(len(kept), -1, dtype=np.int64), files=kept,
                        skipped=skipped, description=str(root))
    files, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in _IMAGE_EXT:
                files.append(f)
                labels.append(k)
    kept, skipped = _usable(files)
    keep = set(kept)
    lab = [lbl for f, lbl in zip(files, labels) if f in keep]
    return ImageSet([f"{f.parent.name}/{f.name}" for f in kept], np.array(lab, dtype=np.int64), files=kept,
                    skipped=skipped, description=str(root))


def concat_images(sets: Sequence[ImageSet]) -> ImageSet:
    """One image set from several (e.g. an unlabelled fitting pool from many folders), in order."""
    if len(sets) == 1:
        return sets[0]
    if any(s.arrays is not None for s in sets):
        raise LintwinError("only image folders can be combined into one pool (not .npz or IDX arrays)")
    return ImageSet(
        ids=[i for s in sets for i in s.ids],
        labels=np.concatenate([s.labels for s in sets]),
        files=[f for s in sets for f in (s.files or [])],
        skipped=[k for s in sets for k in s.skipped],
        description=" + ".join(s.description for s in sets),
    )


@dataclass(frozen=True)
class Preprocess:
    """A network's input pipeline, from its sidecar's ``preprocess`` entry.

    Pixels (0..255) are resized (shorter side to ``resize``), centre-cropped to ``size``,
    converted to ``channels`` (1 = grey, 3 = RGB/BGR by ``channel_order``), then
    ``(x / 255 - mean) / std`` per channel, in NCHW float32.
    """

    size: tuple[int, int]
    channels: int = 3
    resize: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(size=tuple(d["size"]), channels=int(d.get("channels", 3)), resize=d.get("resize"),
                   mean=tuple(d.get("mean", (0.0,))), std=tuple(d.get("std", (1.0,))),
                   channel_order=d.get("channel_order", "RGB"))

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """One image (H x W x C uint8) to a (C x h x w) float32 array; ``rng`` adds augmentation."""
        from PIL import Image

        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        pil = pil.convert("L" if self.channels == 1 else "RGB")
        th, tw = self.size
        if rng is not None:
            pil = _random_resized_crop(pil, rng, (tw, th))
            if rng.random() < 0.5:
                pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            if self.resize:
                w, h = pil.size
                s = self.resize / min(w, h)
                pil = pil.resize((max(tw, round(w * s)), max(th, round(h * s))), Image.Resampling.BILINEAR)
            w, h = pil.size
            if (w, h) != (tw, th):
                left, top = (w - tw) // 2, (h - th) // 2
                pil = pil.crop((left, top, left + tw, top + th))
        x = np.asarray(pil, dtype=np.float32) / 255.0
        x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
        if self.channels == 3 and self.channel_order.upper() == "BGR":
            x = x[::-1]
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _random_resized_crop(pil: Any, rng: np.random.Generator, out: tuple[int, int],
                         scale: tuple[float, float] = (0.35, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Any:
    from PIL import Image

    w, h = pil.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return pil.resize(out, Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return pil.resize(out, Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))

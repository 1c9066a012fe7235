"""Image sources and preprocessing: folders (CSV or sub-folder labels), array files, IDX files.

Every source is an ordered list of samples with a label and an id; pixels come out as
uint8 arrays (H x W x C). Preprocessing follows a network's sidecar (interpolation, resize
and centre crop in either order, scale, mean/std, channel order); training views add seeded
random resized crops and flips, seeded per (image, view) so that any run reproduces the same
pixels.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import LintwinError

__all__ = ["Augment", "ImageSet", "Preprocess", "augment_from_options", "concat_images", "decode_image", "json_int",
           "open_images", "read_idx"]

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (as used by MNIST / Fashion-MNIST), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise LintwinError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise LintwinError(f"{path} is not an unsigned-byte IDX file of 1 to 4 dimensions (bad header)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise LintwinError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    claimed = math.prod(shape)  # Python integers: a header of 2^32-sized dimensions cannot overflow
    if arr.size != claimed:
        raise LintwinError(f"{path} holds {arr.size} bytes of data, its header {shape} says {claimed}")
    return arr.reshape(shape)


def decode_image(path: Path) -> np.ndarray:
    """Decode a whole image file to uint8 H x W x C (C = 1 or 3); 16-bit grey is scaled, not clipped."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
                x = np.asarray(im).astype(np.int64)  # 0..65535
                return ((x + 128) // 257).astype(np.uint8)[..., None]  # round(v * 255 / 65535)
            if im.mode in ("I", "F"):
                raise LintwinError(f"{path}: {im.mode}-mode images (32-bit) are not supported; save 8 or 16 bit")
            if im.mode in ("L", "1"):
                return np.asarray(im.convert("L"))[..., None]
            return np.asarray(im.convert("RGB"))
    except LintwinError:
        raise
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types for corrupt or vanished files)
        raise LintwinError(f"cannot decode {path} ({type(exc).__name__}: {exc})") from None


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

    def source(self, i: int) -> Path | np.ndarray:
        """What a worker needs to get image ``i``: its file, or its pixels."""
        if self.arrays is not None:
            img = self.arrays[i]
            return img[..., None] if img.ndim == 2 else img
        assert self.files is not None
        return self.files[i]

    def load(self, i: int) -> np.ndarray:
        """Pixels of image ``i`` as uint8 (H x W x C)."""
        src = self.source(i)
        return decode_image(src) if isinstance(src, Path) else src

    def sha256(self) -> str:
        """Hash of what the images are: ids, labels, and file sizes and times (or the pixels)."""
        h = hashlib.sha256()
        h.update("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if self.arrays is not None:
            h.update(np.ascontiguousarray(self.arrays).tobytes())
        for f in self.files or []:
            st = f.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            ids=[self.ids[i] for i in index],
            labels=self.labels[index],
            files=[self.files[i] for i in index] if self.files is not None else None,
            arrays=self.arrays[index] if self.arrays is not None else None,
            skipped=list(self.skipped),
            description=f"{self.description}[{len(index)} selected]",
        )


def open_images(spec: str | Path, *, labels_csv: str | Path | None = None, workers: int = 1) -> ImageSet:
    """Open an image source.

    - a directory with a CSV of (file, label) -- ``labels_csv``, or ``labels.csv`` inside it,
      whose label column is ``label`` or ``class_index``; files may lie in sub-folders and
      their ids are their paths relative to the directory;
    - a directory of class sub-folders (labels are the sorted folder names' indices);
    - an ``.npz`` file with ``images`` (N x H x W [x C], uint8) and ``labels``;
    - an IDX images file (``*-images-idx3-ubyte[.gz]``) with its labels file beside it.

    Files are decoded in full (in ``workers`` processes) to find the ones that cannot be
    read, such as truncated JPEGs; those are left out and listed in ``skipped``.
    """
    path = Path(spec)
    if not path.exists():
        raise LintwinError(f"no images at {path}")
    if path.is_dir():
        csv_path = Path(labels_csv) if labels_csv else path / "labels.csv"
        if labels_csv and not csv_path.is_file():
            raise LintwinError(f"no labels CSV at {csv_path}")
        if csv_path.is_file():
            return _from_csv(path, csv_path, workers)
        return _from_subfolders(path, workers)
    if path.suffix == ".npz":
        return _from_npz(path)
    if "idx3-ubyte" in path.name:
        return _from_idx(path)
    raise LintwinError(f"{path}: expected an image folder, an .npz of images, or an IDX images file")


def _int_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise LintwinError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.int64)


def _from_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise LintwinError(f"{path} has no 'images' array (it has {', '.join(z.files) or 'nothing'})")
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else np.full(len(images), -1)
    except (OSError, ValueError) as exc:
        raise LintwinError(f"cannot read {path} as an .npz of images ({exc})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise LintwinError(f"{path}: images must be uint8 N x H x W [x 1|3], got {images.dtype} {images.shape}")
    labels = _int_labels(labels, str(path))
    if len(labels) != len(images):
        raise LintwinError(f"{path} has {len(labels)} labels for {len(images)} images")
    ids = [f"{path.name}:{i}" for i in range(len(images))]
    return ImageSet(ids, labels, arrays=images, description=str(path))


def _from_idx(path: Path) -> ImageSet:
    labels_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    images = read_idx(path)
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise LintwinError(f"{path} holds an array of shape {images.shape}; an IDX images file is N x H x W, "
                           "H and W at least 1")
    labels = read_idx(labels_path) if labels_path.exists() else np.full(len(images), -1)
    if labels.ndim != 1 or len(labels) != len(images):
        raise LintwinError(f"{labels_path} has {labels.shape} labels for {len(images)} images")
    ids = [f"{path.name}:{i}" for i in range(len(images))]
    return ImageSet(ids, labels.astype(np.int64), arrays=images, description=str(path))


def check_image(path: Path) -> str | None:
    """Decode ``path`` fully (JPEGs at reduced DCT scale, which still reads all their data); None if fine."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        return None
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types for corrupt or non-image files)
        return f"{type(exc).__name__}: {exc}"


def _usable(files: list[Path], ids: list[str], workers: int) -> tuple[list[int], list[str]]:
    """Indices of the files Pillow decodes in full, and the ids of the others."""
    if workers > 1 and len(files) > 64:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            problems = list(pool.map(check_image, files, chunksize=32))
    else:
        problems = [check_image(f) for f in files]
    kept = [i for i, p in enumerate(problems) if p is None]
    return kept, [ids[i] for i, p in enumerate(problems) if p is not None]


def _relative_id(root: Path, name: str, where: str) -> str:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not name.strip():
        raise LintwinError(f"{where}: file {name!r} must be a path inside {root}")
    return str(rel)


def _from_csv(root: Path, csv_path: Path, workers: int) -> ImageSet:
    try:
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LintwinError(f"cannot read {csv_path} ({exc})") from None
    key = "label" if "label" in columns else "class_index" if "class_index" in columns else None
    if "file" not in columns or key is None:
        raise LintwinError(f"{csv_path} needs a 'file' column and a 'label' or 'class_index' column")
    ids, labels, seen = [], [], {}
    for line, r in enumerate(rows, start=2):
        where = f"{csv_path} line {line}"
        rid = _relative_id(root, r.get("file") or "", where)
        value = (r.get(key) or "").strip()
        try:
            label = int(value)
        except ValueError:
            raise LintwinError(f"{where}: label {value!r} of {rid} is not an integer") from None
        if rid in seen:
            raise LintwinError(f"{where}: {rid} is listed twice (also on line {seen[rid]}); ids must be unique")
        seen[rid] = line
        ids.append(rid)
        labels.append(label)
    if not ids:
        raise LintwinError(f"{csv_path} lists no images")
    present = [i for i, rid in enumerate(ids) if (root / rid).is_file()]
    missing = sorted(set(ids) - {ids[i] for i in present}, key=ids.index)
    files = [root / ids[i] for i in present]
    kept, skipped = _usable(files, [ids[i] for i in present], workers)
    keep = [present[k] for k in kept]
    return ImageSet([ids[i] for i in keep], np.array([labels[i] for i in keep], dtype=np.int64),
                    files=[root / ids[i] for i in keep], skipped=missing + skipped, description=str(root))


def _from_subfolders(root: Path, workers: int) -> ImageSet:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        files = sorted(f for f in root.iterdir() if f.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise LintwinError(f"{root} holds no images, class folders or labels.csv")
        labels = [-1] * len(files)
    else:
        files, labels = [], []
        for k, c in enumerate(classes):
            for f in sorted((root / c).iterdir()):
                if f.suffix.lower() in _IMAGE_EXT:
                    files.append(f)
                    labels.append(k)
    ids = [f.relative_to(root).as_posix() for f in files]
    kept, skipped = _usable(files, ids, workers)
    return ImageSet([ids[i] for i in kept], np.array([labels[i] for i in kept], dtype=np.int64),
                    files=[files[i] for i in kept], skipped=skipped, description=str(root))


def concat_images(sets: Sequence[ImageSet]) -> ImageSet:
    """One image set from several (e.g. an unlabelled fitting pool from many folders), in order."""
    if len(sets) == 1:
        return sets[0]
    if any(s.arrays is not None for s in sets):
        raise LintwinError("only image folders can be combined into one pool (not .npz or IDX arrays)")
    ids = [f"{s.description}/{i}" if len(sets) > 1 else i for s in sets for i in s.ids]
    if len(set(ids)) != len(ids):
        raise LintwinError("the same image folder is given twice")
    return ImageSet(
        ids=ids,
        labels=np.concatenate([s.labels for s in sets]),
        files=[f for s in sets for f in (s.files or [])],
        skipped=[k for s in sets for k in s.skipped],
        description=" + ".join(s.description for s in sets),
    )


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
_CROPS = ("resize_then_center_crop", "center_crop_then_resize")
_PREPROCESS_KEYS = {"size", "channels", "resize", "mean", "std", "channel_order", "interpolation", "crop",
                    "crop_fraction"}


def _resample(name: str) -> Any:
    from PIL import Image

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


def _pixels_limit(h: int, w: int, what: str) -> None:
    """Refuse image sizes Pillow would refuse as decompression bombs (more than ``MAX_IMAGE_PIXELS``)."""
    from PIL import Image

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

    ``crop`` is ``resize_then_center_crop`` (shorter side resized to ``resize``, then a
    centre crop of ``size``, as torchvision's Resize + CenterCrop) or
    ``center_crop_then_resize`` (a centre crop of ``crop_fraction`` of the shorter side with
    the aspect of ``size``, then resized to ``size``, as TF / timm evaluation pipelines do).
    Resizing uses Pillow's ``interpolation`` filter. Pixels are converted to ``channels``
    (1 = grey, 3 = RGB/BGR by ``channel_order``), then ``(x / 255 - mean) / std`` per channel,
    in NCHW float32. ``size`` is (height, width).
    """

    size: tuple[int, int]
    channels: int = 3
    resize: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"
    interpolation: str = "bilinear"
    crop: str = "resize_then_center_crop"
    crop_fraction: float | None = None

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 1 or w < 1:
            raise LintwinError(f"preprocess size must be positive, got {self.size}")
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
        if self.resize is not None and self.resize < max(self.size):
            raise LintwinError(f"preprocess resize {self.resize} is smaller than the crop size {list(self.size)}")
        _pixels_limit(h, w, "preprocess size")
        if self.resize is not None:
            _pixels_limit(self.resize, self.resize, "preprocess resize")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """From a sidecar's ``preprocess`` entry; unknown keys are refused (a typo would go unseen)."""
        if not isinstance(d, dict):
            raise LintwinError(f"preprocess must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - _PREPROCESS_KEYS)
        if unknown:
            raise LintwinError(f"unknown preprocess key(s) {', '.join(unknown)} (known: "
                               f"{', '.join(sorted(_PREPROCESS_KEYS))})")
        if "size" not in d:
            raise LintwinError("preprocess needs size [height, width]")
        try:
            size = tuple(json_int(v, "preprocess size") for v in d["size"])
            resize = None if d.get("resize") is None else json_int(d["resize"], "preprocess resize")
            channels = json_int(d.get("channels", 3), "preprocess channels")
            frac = None if d.get("crop_fraction") is None else float(d["crop_fraction"])
            mean = tuple(float(v) for v in d.get("mean", (0.0,)))
            std = tuple(float(v) for v in d.get("std", (1.0,)))
        except (TypeError, ValueError) as exc:
            raise LintwinError(f"preprocess has a value of the wrong type ({exc})") from None
        if len(size) != 2:
            raise LintwinError(f"preprocess size must be [height, width], got {d['size']}")
        return cls(size=size, channels=channels, resize=resize, mean=mean,  # type: ignore[arg-type]
                   std=std, channel_order=str(d.get("channel_order", "RGB")),
                   interpolation=str(d.get("interpolation", "bilinear")),
                   crop=str(d.get("crop", "resize_then_center_crop")), crop_fraction=frac)

    def as_dict(self) -> dict[str, Any]:
        """Every setting, defaults included (what produced the features)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # -- geometry ---------------------------------------------------------------------
    def center_box(self, w: int, h: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """The plain view: ``(resized (w, h) or the image's, crop box (left, top, right, bottom))``.

        For ``resize_then_center_crop`` the box is in the resized image (torchvision's
        arithmetic: long side ``int(resize * long / short)``, offsets ``round((W - w) / 2)``);
        for ``center_crop_then_resize`` in the original (TF's arithmetic: crop side
        ``int(fraction * short)``, offsets ``(W - w + 1) // 2``).
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
        if self.resize:
            if w <= h:
                w, h = self.resize, int(self.resize * h / w)
            else:
                w, h = int(self.resize * w / h), self.resize
        top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
        return (w, h), (left, top, left + tw, top + th)

    def pixels(self, img: np.ndarray, rng: np.random.Generator | None = None,
               augment: Augment | None = None) -> np.ndarray:
        """One image (H x W x C uint8) to the network's view as uint8 (h x w x channels)."""
        from PIL import Image

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
                    _pixels_limit(size[1], size[0], f"image of {pil.size[0]} x {pil.size[1]} resized")
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

"""Image sources: folders (CSV or sub-folder labels), array files, IDX files.

Every source is an ordered list of samples with a label and an id; pixels come out as
uint8 arrays (H x W x C). What a network does with them is :mod:`lintwin.networks.preprocess`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import LintwinError

__all__ = ["DEFAULT_FASHION_MNIST", "FASHION_MNIST_INSTALL", "ImageSet", "concat_images", "decode_image", "open_images",
           "read_idx"]

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "apt-get update && apt-get install dataset-fashion-mnist"


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
        hint = ""
        if "fashion-mnist" in str(path).lower() or "idx3-ubyte" in path.name:
            hint = f" (Fashion-MNIST: install the Debian package with '{FASHION_MNIST_INSTALL}')"
        raise LintwinError(f"no images at {path}{hint}")
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

"""Pack an image-folder dataset small enough to travel to a GPU machine, and unpack it there.

    python bench/pack_data.py pack ../shared/data/cifar10 packed/cifar10
    python bench/pack_data.py pack ../shared/data/imagenette packed/imagenette --shorter-side 160
    python bench/pack_data.py unpack packed/cifar10 /tmp/data/cifar10      # on the GPU machine
    python train.py --arch resnet20 --dataset folder:/tmp/data/cifar10/train ...

An archive is ``PREFIX.partN.npz`` files (each under ``--max-mb``, 60 MB by default) plus
``PREFIX.json`` (file count, bytes, SHA-256 of each part, how it was made). A part holds the encoded
image files back to back in one uint8 array with their offsets and relative paths, so the images
are stored as JPEG bytes, not as 8x larger pixel arrays. CIFAR-10's JPEGs (46 MB in all) travel
unchanged; larger photos are re-encoded with their shorter side at ``--shorter-side`` (Imagenette:
224 -> 160 px, above the 146 px that ``train.py --image-size 128`` resizes to before its crops).
Other small files (Imagenette's ``classes.txt``) travel in the index.

Unpacking writes the same folder tree with the same file names, so ``kerascnn.data``'s seeded
stratified split (sorted file names per class) holds out exactly the same images as here, and the
training code reads it through ``folder:PATH`` unchanged. Every file is written to a temporary name
and renamed; an unpack into a folder that already holds the data checks it instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
#: Small non-image files worth carrying (class name maps, READMEs), up to this size each.
SIDE_FILE_MAX = 64 << 10
FORMAT = "kerascnn-pack-1"


class PackError(Exception):
    """A path or archive the user can fix; printed as one line (exit code 2)."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _reencode(data: bytes, shorter_side: int | None, quality: int) -> bytes:
    """JPEG bytes with the shorter side at most ``shorter_side`` (Lanczos); unchanged bytes when
    no resize is needed, so lossless sources are never re-encoded for nothing."""
    if not shorter_side:
        return data
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        if min(im.size) <= shorter_side:
            return data
        scale = shorter_side / min(im.size)
        size = tuple(max(shorter_side, round(d * scale)) for d in im.size)
        out = io.BytesIO()
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).resize(
            size, Image.LANCZOS).save(out, "JPEG", quality=quality)
        return out.getvalue()


def pack(source, prefix, *, shorter_side: int | None = None, quality: int = 90,
         max_mb: float = 60.0, limit_per_class: int | None = None) -> dict:
    """Pack the image files under ``source`` into ``prefix.partN.npz`` + ``prefix.json``.

    ``limit_per_class`` keeps only the first N files (sorted) of each folder: a small test subset.
    Returns the index written to ``prefix.json``.
    """
    source, prefix = Path(source), Path(prefix)
    if not source.is_dir():
        raise PackError(f"{source} is not a folder; pass the dataset folder (e.g. "
                        f"../shared/data/cifar10, holding train/<class>/<image>)")
    files, side = [], {}
    for folder, dirs, names in os.walk(source):
        dirs.sort()
        images = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        files += [Path(folder, n) for n in images[:limit_per_class]]
        for n in names:
            p = Path(folder, n)
            if p.suffix.lower() not in IMAGE_SUFFIXES and p.stat().st_size <= SIDE_FILE_MAX:
                side[str(p.relative_to(source))] = p.read_text(encoding="utf-8", errors="replace")
    if not files:
        raise PackError(f"{source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    max_bytes = int(max_mb * 1e6) - 4096  # room for the npz headers (~1 KB)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parts, blobs, paths, size, total = [], [], [], 0, 0

    def flush():
        nonlocal blobs, paths, size
        if not blobs:
            return
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
                 paths=np.frombuffer("\n".join(paths).encode("utf-8"), np.uint8))
        data = buffer.getvalue()
        name = f"{prefix.name}.part{len(parts)}.npz"
        _atomic_write(prefix.parent / name, data)
        parts.append({"file": name, "images": len(blobs), "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
        blobs, paths, size = [], [], 0

    for path in files:
        data = _reencode(path.read_bytes(), shorter_side, quality)
        rel = path.relative_to(source).as_posix()
        cost = len(data) + len(rel.encode("utf-8")) + 9  # the bytes, the path and its offset
        if size + cost > max_bytes:
            flush()
        blobs.append(data)
        paths.append(rel)
        size += cost
        total += len(data)
    flush()
    index = {"format": FORMAT, "source": str(source), "images": len(files),
             "image_bytes": total, "shorter_side": shorter_side,
             "quality": quality if shorter_side else None, "limit_per_class": limit_per_class,
             "parts": parts, "side_files": side}
    _atomic_write(prefix.with_suffix(".json") if prefix.suffix != ".json" else prefix,
                  (json.dumps(index, indent=1) + "\n").encode())
    return index


def _read_index(prefix: Path) -> dict:
    path = Path(f"{prefix}.json") if not str(prefix).endswith(".json") else prefix
    if not path.is_file():
        raise PackError(f"{path} not found: pass the PREFIX given to `pack` (PREFIX.json and "
                        f"PREFIX.partN.npz)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise PackError(f"{path} is not a {FORMAT} index")
    index["_dir"] = path.parent
    return index


def unpack(prefix, destination) -> int:
    """Write the packed files under ``destination`` (same tree, same names); returns how many
    images were written. Part checksums are verified before anything is written."""
    index = _read_index(Path(prefix))
    destination = Path(destination)
    loaded = []
    for part in index["parts"]:
        path = index["_dir"] / part["file"]
        if not path.is_file():
            raise PackError(f"{path} is missing: copy every PREFIX.partN.npz with PREFIX.json")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != part["sha256"]:
            raise PackError(f"{path} is damaged (its SHA-256 differs from the index); copy it "
                            f"again")
        loaded.append(raw)
    written = 0
    for raw in loaded:
        with np.load(io.BytesIO(raw)) as npz:
            blob, offsets = npz["blob"], npz["offsets"]
            paths = npz["paths"].tobytes().decode("utf-8").split("\n")
        for i, rel in enumerate(paths):
            target = destination / rel
            data = blob[offsets[i]:offsets[i + 1]].tobytes()
            if target.is_file() and target.stat().st_size == len(data):
                continue  # an earlier (interrupted or repeated) unpack wrote it
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, data)
            written += 1
    for rel, text in index.get("side_files", {}).items():
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, text.encode("utf-8"))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack an image folder into PREFIX.partN.npz + PREFIX.json")
    p.add_argument("source")
    p.add_argument("prefix")
    p.add_argument("--shorter-side", type=int, default=None,
                   help="re-encode images whose shorter side exceeds this (default: keep bytes)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality when re-encoding")
    p.add_argument("--max-mb", type=float, default=60.0, help="largest part file (MB)")
    p.add_argument("--limit-per-class", type=int, default=None,
                   help="first N images of each folder only (a test subset)")
    u = sub.add_parser("unpack", help="write the packed files back as a folder tree")
    u.add_argument("prefix")
    u.add_argument("destination")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            index = pack(args.source, args.prefix, shorter_side=args.shorter_side,
                         quality=args.quality, max_mb=args.max_mb,
                         limit_per_class=args.limit_per_class)
            sizes = ", ".join(f"{p['file']} {p['bytes'] / 1e6:.2f} MB" for p in index["parts"])
            print(f"packed {index['images']} images ({index['image_bytes'] / 1e6:.1f} MB of "
                  f"image bytes): {sizes}")
        else:
            n = unpack(args.prefix, args.destination)
            print(f"unpacked {n} images into {args.destination}")
    except PackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

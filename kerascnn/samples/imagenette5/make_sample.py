"""Rebuild this sample from the Imagenette training images (run from the repository root):

    python kerascnn/samples/imagenette5/make_sample.py ../shared/data/imagenette

Five visually distinct classes; per class the first 120 files in name order, the first 100 for
train/ and the next 20 for val/; each 224x224 image resized to 128x128 (Lanczos) and saved as JPEG
quality 90. Deterministic: the same source gives the same files.
"""

import shutil
import sys
from pathlib import Path

from PIL import Image

CLASSES = {"n01440764": "tench", "n03028079": "church", "n03417042": "garbage_truck",
           "n03445777": "golf_ball", "n03888257": "parachute"}
TRAIN, VAL, SIZE, QUALITY = 100, 20, 128, 90


def main(source: str) -> None:
    out = Path(__file__).resolve().parent
    for split in ("train", "val"):
        shutil.rmtree(out / split, ignore_errors=True)
    for wnid, name in CLASSES.items():
        files = sorted((Path(source) / "train" / wnid).iterdir())[:TRAIN + VAL]
        for i, f in enumerate(files):
            split = "train" if i < TRAIN else "val"
            target = out / split / name / f"{f.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                im.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS).save(target, quality=QUALITY)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/imagenette")

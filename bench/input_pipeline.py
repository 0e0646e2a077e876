#!/usr/bin/env python3
"""``tf.data`` input images/s: the project's real training pipeline (``kerascnn.data``), no model.

    python3 bench/input_pipeline.py                          # Imagenette at 224 px, batch 32
    python3 bench/input_pipeline.py --dataset sample --batches 10

The dataset is opened with :func:`kerascnn.data.load` and batched with
:func:`kerascnn.data.pipeline` exactly as training does, with the augmentation training picks
(:func:`kerascnn.data.augmentation_for`: the shared Imagenette copy is already 224x224, so at
224 px that is pad-4 random crop + flip). Two rates:

* **cold**: ``cache=False``, so every image is read, JPEG-decoded, resized, cropped and flipped
  each time: the rate of a first epoch, or of every epoch of a dataset too large to cache;
* **warm**: the cached pipeline in its second epoch (decode and resize done once; crop, flip and
  batching still run every step), what the epochs after the first see.

The cold rate is the one that must stay far above the training rate (``bench/run_all.py``
checks >= 5x ResNet-50's training images/s measured in the same run), so that the input never
bounds training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFAULT_DATASET = f"folder:{common.SHARED_DATA / 'imagenette'}"


def _rate(ds, batches: int, warmup: int) -> tuple[float, int]:
    """Images/s over ``batches`` batches after ``warmup`` batches; and the images counted."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        images += int(next(it)[0].shape[0])
    return images / (time.perf_counter() - start), images


def measure(dataset: str = DEFAULT_DATASET, *, image_size: int = 224, batch_size: int = 32,
            batches: int = 60, warmup: int = 3, warm: bool = True) -> dict:
    """Cold (decode every step) and warm (cached) images/s of the training pipeline."""
    from kerascnn import data

    started = time.perf_counter()
    ds = data.load(dataset, verbose=False)
    load_s = time.perf_counter() - started
    augment = data.augmentation_for(ds, image_size)

    def pipe(cache):
        return data.pipeline(ds.train, image_size=image_size, channels=ds.channels,
                             style=ds.style, training=True, augment=augment,
                             batch_size=batch_size, native_size=ds.native_size, repeat=True,
                             drop_remainder=True, cache=cache)

    cold, counted = _rate(pipe(False), batches, warmup)
    result = {"dataset": dataset, "dataset_name": ds.name, "train_images": ds.train.count,
              "image_size": image_size, "batch_size": batch_size, "augment": augment,
              "batches": batches, "images_counted": counted, "load_and_scan_s": load_s,
              "cold_images_per_s": cold}
    if warm:
        # Fill the cache with one whole epoch, then time the second epoch.
        epoch = -(-ds.train.count // batch_size)
        started = time.perf_counter()
        result["warm_images_per_s"], _ = _rate(pipe(True), batches, epoch + warmup)
        result["cache_fill_s"] = time.perf_counter() - started
    return result


def markdown(result: dict) -> str:
    rows = [["cold: decode + resize + crop + flip every step", result["cold_images_per_s"]]]
    if "warm_images_per_s" in result:
        rows.append(["warm: cached after epoch 1, crop + flip every step",
                     result["warm_images_per_s"]])
    head = (f"`kerascnn.data.pipeline` on {result['dataset_name']} ({result['train_images']:,} "
            f"training images), {result['image_size']} px, batch {result['batch_size']}, "
            f"augmentation `{result['augment']}`, {result['batches']} batches timed:\n\n")
    return head + common.table(["pipeline", "images/s"], rows, "lr")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None,
                        help=f"dataset spec (default: {DEFAULT_DATASET}; `sample` with --quick)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=None, help="timed batches (default 60)")
    parser.add_argument("--no-warm", action="store_true", help="skip the cached (warm) rate")
    common.standard_arguments(parser, "the bundled sample, 5 batches, for a smoke test")
    args = parser.parse_args(argv)
    common.set_backend(args.backend)
    dataset = args.dataset or ("sample" if args.quick else DEFAULT_DATASET)
    result = measure(dataset, image_size=args.image_size, batch_size=args.batch_size,
                     batches=args.batches or (5 if args.quick else 60),
                     warmup=1 if args.quick else 3, warm=not args.no_warm)
    return common.emit(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""scikit-image's classical cell segmentation, timed on one thread.

Run by `bench-segment` (host/accel) on the images it writes:
gaussian -> Otsu -> Euclidean distance transform -> peak_local_max ->
watershed -> remove objects under min_area. Writes skimage_NNN.png (16-bit
labels) next to each img_NNN.png and prints a JSON report on stdout:
per-round images/s and their median. Only the pipeline is timed (the
images are decoded first), as on the stagecraft side.

    pip install scikit-image
    python3 scripts/bench-skimage.py DIR --images 24 --rounds 5
"""
import argparse
import json
import os
import statistics
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np
import skimage
from scipy import ndimage as ndi
from skimage import filters, io, morphology, segmentation
from skimage.feature import peak_local_max


def segment(image, sigma, min_distance, min_area):
    smooth = filters.gaussian(image, sigma=sigma, preserve_range=True) if sigma > 0 else image.astype(float)
    mask = smooth > filters.threshold_otsu(smooth)
    distance = ndi.distance_transform_edt(mask)
    label_mask, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label_mask, exclude_border=False)
    markers = np.zeros(distance.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    if min_area > 1:
        labels = morphology.remove_small_objects(labels, min_size=min_area)
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--images", type=int, required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sigma", type=float, default=2.0)
    p.add_argument("--min-distance", type=int, default=5)
    p.add_argument("--min-area", type=int, default=30)
    a = p.parse_args()
    images = [io.imread(os.path.join(a.dir, f"img_{k:03}.png")) for k in range(a.images)]
    rates = []
    for _ in range(a.rounds):
        start = time.perf_counter()
        results = [segment(im, a.sigma, a.min_distance, a.min_area) for im in images]
        rates.append(len(images) / (time.perf_counter() - start))
    for k, labels in enumerate(results):
        io.imsave(os.path.join(a.dir, f"skimage_{k:03}.png"), labels.astype(np.uint16), check_contrast=False)
    json.dump(
        {
            "skimage_version": skimage.__version__,
            "images": a.images,
            "rounds": a.rounds,
            "images_per_s": rates,
            "images_per_s_median": statistics.median(rates),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

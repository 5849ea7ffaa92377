"""``evaluate.protocol``: what the generated images are compared with, and how (docs/method.md §5 "Two protocols").

- ``heldout`` (default): the real reference is ``evaluate.real_split`` (the test split by default: images the model
  never trained on); images are compared at the generation resolution (real ones resized with Lanczos); Inception
  resizes to 299 inside the network the TF1 way (torch-fidelity); LPIPS and 1-cos pair every generated image with a
  real image of its own species (``pairing``).
- ``authors``: the co-author's evaluation scripts ([EVAL], docs/method.md §5), so numbers can be set beside Table
  S2: the reference is every real image of the class, training images included (``prepare_subset_fid.py`` links
  whole real class folders); every image is stretched to 512 x 512 without a crop (torchvision
  ``Resize((512, 512))`` on PIL images: bilinear); Inception gets that image resized to 299 the pytorch-fid way
  (``F.interpolate``, bilinear, ``align_corners=False``, no antialias, [0, 1] -> [-1, 1]); LPIPS pairs real_i with
  generated_i within each drawn taxon (``lpips.py``) and a class's LPIPS is the mean of per-batch means over
  batches of 128 pairs (its DataLoader). The stretch is for Inception and LPIPS only: BioCLIP sees the generated
  files as they are (the scripts open them), and the probe (not part of the scripts) sees the images at the
  generation size under either protocol, so its accuracy of a generated image does not depend on the protocol.
Either way, the ceilings (the probe's and BioCLIP's accuracy on real images) use the real test images only.
"""

from __future__ import annotations

from PIL import Image

from taxadiffusion.metrics.data import REAL_SPLITS
from taxadiffusion.metrics.pairing import AUTHORS, HELDOUT

__all__ = ["AUTHORS", "AUTHORS_LPIPS_BATCH", "AUTHORS_SIZE", "HELDOUT", "compare_size", "reference_splits"]

AUTHORS_SIZE = (512, 512)  # (W, H) of every image the authors' LPIPS and FID scripts compare
AUTHORS_LPIPS_BATCH = 128  # lpips.py --batch_size default: its average is a mean of per-batch means


def reference_splits(cfg) -> list[str]:
    """The shard splits the real reference is read from."""
    return ["train", "test"] if cfg.protocol == AUTHORS else REAL_SPLITS[cfg.real_split]


def compare_size(cfg, gen_size: tuple[int, int]) -> tuple[tuple[int, int], int, str]:
    """``(size (W, H), PIL resample, cache tag)`` at which real and generated images are compared."""
    if cfg.protocol == AUTHORS:
        return AUTHORS_SIZE, Image.BILINEAR, "|stretch-bilinear"
    return tuple(gen_size), Image.LANCZOS, ""


def describe(cfg, gen_size: tuple[int, int]) -> dict:
    """``summary.json`` ``data``'s account of the protocol."""
    size, _, _ = compare_size(cfg, gen_size)
    return {"protocol": cfg.protocol, "reference_splits": reference_splits(cfg), "comparison_size": list(size),
            "comparison_resize": "stretch, PIL bilinear (torchvision Resize)" if cfg.protocol == AUTHORS
            else "real images to the generation size, Lanczos"}

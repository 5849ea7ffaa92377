"""Feature backbones for Fréchet distances, and how their pretrained weights are found.

Weights come the way each library normally gets them (torch.hub cache under ``$TORCH_HOME``, downloaded on
first use) or from a local file set in ``params.yaml``. A missing file is a one-line ``UserError`` naming the
param to set, never a ``URLError`` from inside a library. ``HF_HUB_OFFLINE=1`` (set in tests and CI) also
skips torch.hub download attempts, so the error comes at once.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from taxadiffusion.core.device import default_device  # the pretrained metric networks use the GPU when there is one;
from taxadiffusion.core.errors import (
    UserError,  # the probe stays on the CPU (tiny, and bit-stable for the feature cache)
)
from taxadiffusion.core.files import sha256_file

log = logging.getLogger(__name__)

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
# FID inputs are resized inside the network with torch-fidelity's TF1-compatible bilinear, the resize of the
# original TF FID code (= torchmetrics with antialias=False; its default antialias=True gives other numbers).
INCEPTION_RESIZE = ("tf1-bilinear-299 (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x; "
                    "torchmetrics antialias=False)")
# evaluate.protocol: authors (the co-author's fid/calculate_fid.py): pytorch-fid's InceptionV3 input path, the image
# (stretched to 512) resized to 299 with F.interpolate(bilinear, align_corners=False) in [0, 1], then 2x - 1.
PYTORCH_FID_RESIZE = "pytorch-fid: F.interpolate bilinear to 299 (align_corners=False, no antialias), [0, 1] -> [-1, 1]"
LOAD_ERRORS = (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError)



def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_cached(url: str) -> Optional[Path]:
    """The file torch.hub would use for ``url`` if it is already downloaded."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if path.is_file() else None


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


def missing_weights(param: str, what: str, url: str, reason: str) -> UserError:
    name = os.path.basename(url)
    return UserError(f"{param}: {what} not found ({reason}); download {url} and set {param}=/path/to/{name}")


def resolve_weights(param: str, configured: Optional[str], what: str, url: str) -> Optional[str]:
    """A local file for the weights, or None to let the library download them (online only)."""
    if configured:
        if not Path(configured).is_file():
            raise missing_weights(param, what, url, f"no file at {configured}")
        return str(configured)
    cached = hub_cached(url)
    if cached:
        return str(cached)
    if offline():
        raise missing_weights(param, what, url,
                              f"not in the torch.hub cache {torch.hub.get_dir()} and HF_HUB_OFFLINE=1")
    return None



class InceptionBackbone:
    """InceptionV3 pool3 (2048-d): torch-fidelity's ``FeatureExtractorInceptionV3``, the extractor torchmetrics'
    ``FrechetInceptionDistance`` wraps (used directly: importing torchmetrics costs ~3 s per stage run)."""

    name = "inception"

    def __init__(self, weights: Optional[str] = None, param: str = "evaluate.inception_weights",
                 pytorch_fid: bool = False):
        path = resolve_weights(param, weights, "Inception weights", INCEPTION_URL)
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
        except LOAD_ERRORS as exc:
            if path is None:
                raise missing_weights(param, "Inception weights", INCEPTION_URL,
                                      f"download failed: {one_line(exc)}") from None
            raise UserError(f"{param}: {path} is not a torch-fidelity InceptionV3 state_dict "
                            f"({one_line(exc)})") from None
        self.device = default_device()
        self.net.to(self.device)
        path = path or str(hub_cached(INCEPTION_URL) or INCEPTION_URL)
        self.weights = path
        self.pytorch_fid = pytorch_fid
        mode = "pytorch-fid" if pytorch_fid else "tf1"
        self.cache_id = f"inception|pool3|{mode}|{sha256_file(path, 16) if Path(path).is_file() else path}"
        self.info = {
            "metric": "FID",
            "impl": f"torch-fidelity {torch_fidelity.__version__} FeatureExtractorInceptionV3 (as in torchmetrics FID)",
            "features": "pool3, 2048-d",
            "resize": PYTORCH_FID_RESIZE if pytorch_fid else INCEPTION_RESIZE,
            "input": "uint8 RGB at the generation resolution (real images resized to it with Lanczos)",
            "weights": path,
        }

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        from tqdm import tqdm

        out = []
        for start in tqdm(range(0, len(images), batch_size), desc="inception", leave=False):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            x = x.to(self.device)
            pool3 = pytorch_fid_pool3(self.net, x) if self.pytorch_fid else self.net(x)[0]
            out.append(pool3.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


INCEPTION_BODY = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                  "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                  "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")


def inception_body(net, x: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's InceptionV3 from its first convolution to pool3 (its ``forward`` after the resize and the
    normalisation), on an already normalised ``[N, 3, 299, 299]`` float batch -> ``[N, 2048]``."""
    for name in INCEPTION_BODY:
        x = getattr(net, name)(x)
    return torch.flatten(x, 1).to(torch.float32)


def pytorch_fid_pool3(net, images: torch.Tensor) -> torch.Tensor:
    """Pool3 features the pytorch-fid way (``PYTORCH_FID_RESIZE``) of uint8 ``[N, 3, H, W]`` images: the same
    2015 TF Inception weights and graph, pytorch-fid's input resize and scaling instead of torch-fidelity's."""
    x = images.to(net.feature_extractor_internal_dtype) / 255.0
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return inception_body(net, 2 * x - 1)

"""Metric backbone weight files with random weights, in the formats the real loaders read: torch-fidelity's
Inception, torchvision's AlexNet trunk (LPIPS) and a tiny open_clip ``local-dir:`` model (BioCLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}


def write_random_inception(path: Path) -> Path:
    """A random state_dict with exactly torch-fidelity's FeatureExtractorInceptionV3 keys and shapes.

    The class always loads weights in its constructor; a subclass that skips only that call gives the
    randomly initialised architecture (fp16 to keep the file small; loading casts back to fp32)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Blank(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    torch.save({}, path.with_suffix(".empty"))
    torch.manual_seed(0)
    net = _Blank("blank", ["2048"], feature_extractor_weights_path=str(path.with_suffix(".empty")))
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    return path


def write_random_alexnet(path: Path) -> Path:
    """torchvision AlexNet's ``features.*`` tensors (what LPIPS uses; the classifier is left out for size)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    return path


def write_tiny_clip(folder: Path) -> Path:
    """An open_clip local-dir model folder: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


class IdentityFeatures(torch.nn.Module):
    """A 'feature extractor' that returns its input: torchmetrics then sees exactly our feature vectors."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x

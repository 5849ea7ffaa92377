"""The metric backbones' weights, checked the way ``evaluate`` finds them, without building a network.

``evaluate`` loads its backbones one after another and stops at the first that is missing, after every level was
trained and every image generated; here each backbone of ``evaluate.backbones`` is looked up with the same lookup
code (``metrics/backbones.py`` ``resolve_weights``, ``metrics/lpips_metric.py`` ``torchvision_url``,
``metrics/bioclip.py``'s model-id rule) and every missing one is a problem naming the param to set. A file that is
there is only checked to look like a checkpoint (its first bytes: a torch zip or pickle, or safetensors), which
catches a failed download saved as an HTML page without reading gigabytes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Optional

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.backbones import INCEPTION_URL, offline, resolve_weights
from taxadiffusion.metrics.bioclip import resolve_model
from taxadiffusion.metrics.lpips_metric import lpips_nets, torchvision_url

CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip fetches, in order
CLIP_CONFIG = "open_clip_config.json"
PACKAGES = {"inception": "torch_fidelity", "lpips": "lpips", "bioclip": "open_clip"}


def checkpoint_problem(path: str | Path, param: str) -> Optional[str]:
    """Why ``path`` is not a weights file (empty, or not a torch zip / pickle / safetensors file), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        return f"{param}: cannot read {path} ({exc.strerror})"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save: a zip archive, or a pickle (protocol >= 2)
        return None
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return None
    what = "an empty file" if not head else "neither a torch checkpoint nor safetensors (a failed download?)"
    return f"{param}: {path} is {what}; download the weights again"


def _file_weights(param: str, configured: Optional[str], what: str, url: str) -> list[str]:
    try:
        path = resolve_weights(param, configured, what, url)
    except UserError as exc:
        return [str(exc)]
    problem = checkpoint_problem(path, param) if path else None  # None: online, the library downloads them
    return [problem] if problem else []


def _hub_clip(repo: str, param: str, model_id: str) -> list[str]:
    if not offline():
        return []  # open_clip downloads it; a failure then is evaluate's one-line error
    from huggingface_hub import constants, try_to_load_from_cache

    config = try_to_load_from_cache(repo, CLIP_CONFIG)
    weights = [w for w in CLIP_WEIGHTS if isinstance(try_to_load_from_cache(repo, w), str)]
    if isinstance(config, str) and weights:
        return []
    # open_clip only warns when the weights are missing and goes on with random ones: both files are needed
    absent = " and ".join(n for n, ok in ((CLIP_CONFIG, isinstance(config, str)), (CLIP_WEIGHTS[0], weights)) if not ok)
    return [f"{param}={model_id!r}: {absent} not in the HF cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1; "
            f"download it where you have network (`hf download {repo}`) or set {param}=local-dir:/path/to/bioclip "
            f"(a folder with {CLIP_CONFIG} and {CLIP_WEIGHTS[0]})"]


def _local_clip(folder: Path, param: str) -> list[str]:
    try:
        config = json.loads((folder / CLIP_CONFIG).read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or "model_cfg" not in config:
        return [f"{param}: {folder / CLIP_CONFIG} is not an open_clip config (no 'model_cfg')"]
    found = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext))
    if not found:  # open_clip would warn and go on with random weights
        return [f"{param}: {folder} has {CLIP_CONFIG} but no weights file ({CLIP_WEIGHTS[0]})"]
    problem = checkpoint_problem(found[0], param)
    return [problem] if problem else []


def bioclip_problems(model_id: str, param: str = "evaluate.bioclip_model") -> list[str]:
    try:
        name, pretrained = resolve_model(model_id, param)  # evaluate's own rule for the three forms
    except UserError as exc:
        return [str(exc)]
    if name.startswith("hf-hub:"):
        return _hub_clip(name[len("hf-hub:"):], param, model_id)
    if name.startswith("local-dir:"):
        return _local_clip(Path(name[len("local-dir:"):]), param)
    problem = checkpoint_problem(pretrained, param)
    return [problem] if problem else []


def backbone_problems(cfg: EvaluateConfig) -> list[str]:
    """One problem per backbone of ``evaluate.backbones`` whose weights (or library) cannot be had."""
    asked = set(cfg.backbones)
    problems = []
    for backbone, package in PACKAGES.items():
        wanted = backbone in asked or (backbone == "lpips" and asked & {"vgg", "alex"})
        if wanted and importlib.util.find_spec(package) is None:
            problems.append(f"evaluate.backbones: {backbone} needs the Python package {package}, which is not "
                            "installed (pip install -r requirements.txt)")
    if "inception" in asked:
        problems += _file_weights("evaluate.inception_weights", cfg.inception_weights, "Inception weights",
                                  INCEPTION_URL)
    for net, weights in lpips_nets(cfg):
        problems += _file_weights("evaluate.lpips_weights", weights, f"torchvision {net} weights", torchvision_url(net))
    if "bioclip" in asked:
        problems += bioclip_problems(cfg.bioclip_model)
    return problems

"""LPIPS between real and generated images of one class (fidelity, lower = closer).

Which real image is compared with which generated one is ``pairing``'s rule (``evaluate.protocol``): by default
every generated image with a real image of its own species; ``authors``: the co-author's evaluation script
(docs/method.md §5 [EVAL:lpips.py]), real image i with generated image i within each sample folder. The same
network measures the within-species diversity of each side (:meth:`LPIPSMetric.indexed` on pairs of one side).
Images are compared at the generation resolution (real images resized to it). Net: ``evaluate.lpips_net`` (vgg
as in [EVAL], or alex), LPIPS v0.1 from the ``lpips`` package; its linear heads ship in the wheel, the torchvision
trunk comes from the torch.hub cache (downloaded on first use) or from ``evaluate.lpips_weights`` (a torchvision
state_dict file).
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.core.device import default_device
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import sha256_file
from taxadiffusion.metrics.backbones import LOAD_ERRORS, missing_weights, one_line, resolve_weights

NETS = ("vgg", "alex")
# AlexNet's pooling stack needs ~31 px; images below this size (the 32 px tiny preset, 16 px tests) are
# upsampled (bilinear) for LPIPS only. At 512 px (SD1.5) nothing changes.
MIN_SIZE = 64


def lpips_nets(cfg: EvaluateConfig) -> list[tuple[str, Optional[str]]]:
    """(net, weights file) of every LPIPS net ``evaluate`` builds: ``vgg`` / ``alex`` by name, ``lpips`` meaning
    ``evaluate.lpips_net``; ``evaluate.lpips_weights`` is the trunk file of ``evaluate.lpips_net`` only.
    The one rule, used by ``evaluate`` (``metrics/inputs.py``) and ``preflight``."""
    asked = set(cfg.backbones)
    nets = sorted({n for n in ("vgg", "alex") if n in asked} | ({cfg.lpips_net} if "lpips" in asked else set()))
    return [(net, cfg.lpips_weights if net == cfg.lpips_net else None) for net in nets]


def torchvision_url(net: str) -> str:
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return {"vgg": VGG16_Weights.IMAGENET1K_V1, "alex": AlexNet_Weights.IMAGENET1K_V1}[net].url


def pair_count(n_real: int, n_gen: int) -> int:
    """Image i with image i, as many pairs as the smaller side has images (the ``authors`` rule within a taxon)."""
    return min(n_real, n_gen)


class LPIPSMetric:
    def __init__(self, net: str = "vgg", weights: Optional[str] = None, param: str = "evaluate.lpips_weights"):
        import lpips

        if net not in NETS:
            raise UserError(f"evaluate.lpips_net: '{net}' is not one of {list(NETS)}")
        url = torchvision_url(net)
        path = resolve_weights(param, weights, f"torchvision {net} weights", url)
        with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" inside lpips
            warnings.simplefilter("ignore")
            if path is None:  # online, not cached: lpips/torchvision download as usual
                try:
                    self.model = lpips.LPIPS(net=net, pretrained=True, verbose=False)
                except LOAD_ERRORS as exc:
                    raise missing_weights(param, f"torchvision {net} weights", url,
                                          f"download failed: {one_line(exc)}") from None
                path = url
            else:  # the real lpips model with a random trunk, then the trunk's torchvision weights from the file
                self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
                self._load_trunk(path, param)
        self.device = default_device()
        self.model.eval().requires_grad_(False).to(self.device)
        self.net = net
        self.name = net
        self.cache_id = f"lpips|{net}|{sha256_file(path, 16) if not path.startswith('http') else path}"
        self.info = {
            "metric": "LPIPS",
            "impl": f"lpips {version('lpips')} LPIPS v0.1, net={net}",
            "kind": "fidelity: generated vs real of the same class (lower = closer)",
            "resolution": f"generation resolution (smaller than {MIN_SIZE} px: upsampled bilinearly to {MIN_SIZE})",
            "weights": path,
        }

    def _load_trunk(self, path: str, param: str) -> None:
        """Copy torchvision ``features.<i>.*`` tensors into lpips' ``net.slice<k>.<i>.*`` (same module objects)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except LOAD_ERRORS as exc:
            raise UserError(f"{param}: cannot read {path} ({one_line(exc)})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        target = {}
        for key in self.model.net.state_dict():
            _slice, index, leaf = key.split(".", 2)
            target[key] = f"features.{index}.{leaf}"
        missing = [src for src in target.values() if src not in state]
        if missing:
            raise UserError(f"{param}: {path} is not a torchvision {self.model.pnet_type} state_dict "
                            f"(no '{missing[0]}')")
        try:
            self.model.net.load_state_dict({k: state[src] for k, src in target.items()})
        except RuntimeError as exc:
            raise UserError(f"{param}: {path} does not fit torchvision {self.model.pnet_type} "
                            f"({one_line(exc)})") from None

    def paired(self, real: np.ndarray, gen: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Per-pair LPIPS of uint8 ``[N, H, W, 3]`` images, real_i with gen_i (:func:`pair_count` pairs); ``real``
        is resized to ``gen``'s size if needed."""
        idx = np.arange(pair_count(len(real), len(gen)))
        return self.indexed(real, gen, idx, idx, batch_size)

    @torch.no_grad()
    def indexed(self, real: np.ndarray, gen: np.ndarray, ireal, igen, batch_size: int = 32) -> np.ndarray:
        """LPIPS of ``real[ireal[k]]`` with ``gen[igen[k]]`` for every k (uint8 ``[N, H, W, 3]`` images, gathered one
        batch at a time); ``real`` is resized to ``gen``'s size if needed."""
        out = []
        for start in range(0, len(igen), batch_size):
            a = _to_unit(real[np.asarray(ireal[start : start + batch_size])]).to(self.device)
            b = _to_unit(gen[np.asarray(igen[start : start + batch_size])]).to(self.device)
            if a.shape[-2:] != b.shape[-2:]:
                a = F.interpolate(a, size=b.shape[-2:], mode="bilinear", antialias=True).clamp(-1, 1)
            if min(b.shape[-2:]) < MIN_SIZE:
                size = [max(MIN_SIZE, s) for s in b.shape[-2:]]
                a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
                b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
            out.append(self.model(a, b).flatten().double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], the range lpips expects."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

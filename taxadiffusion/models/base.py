"""Base-model presets (``model.preset``): ``sd15`` (Stable Diffusion v1.5, the paper) and ``tiny``.

Both load through diffusers/transformers ``from_pretrained`` — a local folder or, for sd15, a hub id read
from the HF cache or downloaded as diffusers normally does. A model that cannot be had is a one-line
:class:`UserError` naming ``model.pretrained``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import UserError

SD15_DEFAULT = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_DEFAULT = "assets/tiny-base"


@dataclass
class BaseModel:
    """The frozen pieces of the base generator, plus its own noise-schedule config."""

    preset: str
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module
    scheduler_config: dict
    source: str
    info: dict = field(default_factory=dict)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def text_hidden(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] ``[B, 3, H, W]`` -> scaled latents (SD: VAE mean, as diffusers' examples sample)."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.sample() * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor, return_dict=False)[0]

    def to(self, device, dtype=None):
        for module in (self.unet, self.text_encoder, self.vae):
            module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)
        return self

    def freeze(self):
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False)
            module.eval()
        return self


def _missing(cfg: ModelConfig, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if cfg.preset == "sd15":
        hint = (
            f"download it where you have network (`hf download {SD15_DEFAULT}`) or set "
            "model.pretrained to a local diffusers folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/"
        )
    else:
        hint = f"set model.pretrained to the tiny base folder ({TINY_DEFAULT}, shipped in the repo)"
    return UserError(f"model.pretrained={cfg.pretrained!r}: cannot load the {cfg.preset} base model ({first}); {hint}")


def load_base(cfg: ModelConfig, device: str | torch.device = "cpu") -> BaseModel:
    """Load the frozen base model named by ``cfg`` (all parameters ``requires_grad=False``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if cfg.preset not in ("tiny", "sd15"):
        raise UserError(f"model.preset={cfg.preset!r}: expected 'tiny' or 'sd15'")
    location = cfg.pretrained
    kwargs = {"revision": cfg.revision} if cfg.revision else {}
    if cfg.preset == "tiny" and not Path(location).is_dir():
        raise _missing(cfg, FileNotFoundError(f"no folder {location}"))
    try:
        unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", **kwargs)
        if cfg.preset == "tiny":
            from .tiny import SpaceToDepthVAE

            # No weights: the space-to-depth view is parameter-free, so it loads from its config alone.
            vae = SpaceToDepthVAE.from_config(SpaceToDepthVAE.load_config(location, subfolder="vae"))
        else:
            vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **kwargs)
        scheduler_config = _load_scheduler_config(location, kwargs)
    except UserError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        raise _missing(cfg, exc) from None
    base = BaseModel(cfg.preset, unet, text_encoder, tokenizer, vae, scheduler_config, str(location))
    base.freeze().to(device)
    return base


def _load_scheduler_config(location: str, kwargs: dict) -> dict:
    from diffusers import DDPMScheduler

    config = DDPMScheduler.load_config(location, subfolder="scheduler", **kwargs)
    return {k: v for k, v in dict(config).items() if not k.startswith("_") or k == "_class_name"}


def file_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every weight/config file under ``folder`` (relative path -> hex digest)."""
    folder = Path(folder)
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".safetensors", ".json", ".txt"} and path.name != "manifest.json":
            hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def verify_tiny(folder: str | Path) -> dict:
    """Check the shipped tiny base against its recorded manifest (hashes + recipe)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"{manifest_path}: missing; the tiny base must be pretrained first (python -m taxadiffusion.pretrain)")
    manifest = json.loads(manifest_path.read_text())
    actual = file_hashes(folder)
    for name, digest in manifest.get("files", {}).items():
        if actual.get(name) != digest:
            raise UserError(f"{folder / name}: sha256 does not match {manifest_path} (file changed or missing)")
    return manifest


def prepare_base(cfg: ModelConfig, out_dir: str | Path, shards: str | Path | None = None,
                 latents_dir: str | Path | None = None, device: str = "cpu") -> dict:
    """The `base` stage: resolve and check the base model; for sd15 optionally cache VAE latents.

    tiny: verifies the shipped weights against ``assets/tiny-base/manifest.json`` (hash + recipe).
    sd15: loads every component once (a missing model is a one-line error naming ``model.pretrained``)
    and, with ``model.cache_latents``, encodes the training images once into ``<latents_dir>/train.pt``
    so training never re-encodes them.
    """
    from ..io import write_json

    info: dict = {"preset": cfg.preset, "pretrained": cfg.pretrained, "revision": cfg.revision}
    if cfg.preset == "tiny":
        manifest = verify_tiny(cfg.pretrained)
        info["files"] = manifest["files"]
        info["recipe"] = manifest.get("recipe")
    base = load_base(cfg, device=device)
    info.update(
        resolution=base.resolution,
        latent_shape=[int(base.unet.config.in_channels), int(base.unet.config.sample_size), int(base.unet.config.sample_size)],
        prediction_type=base.prediction_type,
        text_hidden=base.text_hidden,
        text_max_length=int(base.tokenizer.model_max_length),
        unet_parameters=sum(p.numel() for p in base.unet.parameters()),
    )
    if cfg.preset == "sd15" and cfg.cache_latents and shards is not None and latents_dir is not None:
        import torch as _torch

        from ..io import atomic_path
        from ..shard import load_split_arrays
        from ..training import encode_all

        images, lineages = load_split_arrays(shards, "train")
        latents = encode_all(base, images).half()
        Path(latents_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(latents_dir) / "train.pt") as tmp:
            _torch.save({"latents": latents, "lineages": lineages}, tmp)
        info["cached_latents"] = int(len(latents))
    if latents_dir is not None:  # always an output (empty for tiny), so DVC's graph is the same for both presets
        write_json(Path(latents_dir) / "latents.json", {"preset": cfg.preset, "cached": info.get("cached_latents", 0)})
    write_json(Path(out_dir) / "base.json", info)
    return info

"""Base-model presets (``model.preset``): ``sd15`` (Stable Diffusion v1.5, the paper) and ``tiny``.

Both load through diffusers/transformers ``from_pretrained`` — a local folder or, for sd15, a hub id read
from the HF cache or downloaded as diffusers normally does. A model that cannot be had is a one-line
:class:`UserError` naming ``model.pretrained``, its real cause (no such folder, a folder without ``vae/`` or
another component, a hub id while ``HF_HUB_OFFLINE=1`` that is not cached, a folder of the other preset)
and the param to set, checked before anything loads (:func:`check_pretrained`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from transformers import CLIPTextModel, CLIPTokenizer

from taxadiffusion.config import PRESETS, ModelConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, sha256_file
from taxadiffusion.models.tiny import SpaceToDepthVAE

SD15_DEFAULT = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_DEFAULT = "assets/tiny-base"
# the sub-folders a base model folder holds, and the file that marks each one (diffusers layout)
COMPONENTS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
              "tokenizer": "tokenizer_config.json", "scheduler": "scheduler_config.json"}
TINY_VAE = "SpaceToDepthVAE"  # the tiny base's vae/ (a parameter-free space-to-depth view); SD1.5's: AutoencoderKL
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def move(module: torch.nn.Module, device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``module.to(device)``, then a cast to ``dtype`` only when its parameters are of another dtype. diffusers warns
    on every ``to(dtype=...)`` of a model about "modules that should be kept in float32" even when the model names
    none (it printed ``[]`` on every generate, figures and draw): the warning is kept only for a model that names
    some."""
    module.to(device)
    current = next(module.parameters(), torch.empty(0)).dtype
    if dtype is None or current == dtype:
        return module
    if getattr(module, "_keep_in_fp32_modules", None):
        return module.to(dtype=dtype)
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return module.to(dtype=dtype)
    finally:
        diffusers_logging.set_verbosity(level)


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
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor, return_dict=False)[0]

    def to(self, device, dtype=None):
        for module in (self.unet, self.text_encoder, self.vae):
            move(module, device, dtype)
        return self

    def freeze(self):
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False)
            module.eval()
        return self


SD_FOLDER = f"a local diffusers folder with {' '.join(c + '/' for c in COMPONENTS)}"


def _hint(preset: str) -> str:
    if preset == "sd15":
        return (f"set model.pretrained to {SD_FOLDER} (`hf download {SD15_DEFAULT} --local-dir ...` where you "
                "have network) or to that hub id")
    return f"set model.pretrained to the tiny base folder ({TINY_DEFAULT}, shipped in the repo)"


def _missing(cfg: ModelConfig, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"model.pretrained={cfg.pretrained!r}: cannot load the {cfg.preset} base model ({first}); "
                     f"{_hint(cfg.preset)}")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (the environment wins over its import-time constant)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    return hub_constants.HF_HUB_OFFLINE if value is None else value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _check_folder(cfg: ModelConfig, folder: Path, what: str) -> None:
    """Every component is there, and the folder is of ``cfg.preset``'s kind (its vae/ config says which)."""
    where = f"model.pretrained={cfg.pretrained!r}: {what}"
    for name, marker in COMPONENTS.items():
        if not (folder / name / marker).is_file():
            has = "has no" if not (folder / name).is_dir() else f"has {name}/ without {marker} in"
            raise UserError(f"{where} {has} {name}/ (a base model folder holds "
                            f"{' '.join(c + '/' for c in COMPONENTS)}); {_hint(cfg.preset)}")
    try:
        vae_class = json.loads((folder / "vae" / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{where}: vae/config.json is not a JSON object; {_hint(cfg.preset)}") from None
    if cfg.preset == "sd15" and vae_class == TINY_VAE:
        raise UserError(f"{where} holds the tiny base (its vae/ is a {TINY_VAE} config), but model.preset is sd15; "
                        "set model.preset: tiny, or model.pretrained to a Stable Diffusion 1.5 folder or hub id")
    if cfg.preset == "tiny" and vae_class != TINY_VAE:
        raise UserError(f"{where} is not the tiny base (its vae/ is an {vae_class} config, not a {TINY_VAE}), "
                        f"but model.preset is tiny; set model.preset: sd15, or model.pretrained: {TINY_DEFAULT}")


def check_pretrained(cfg: ModelConfig) -> None:
    """One-line errors for a ``model.pretrained`` that cannot load, naming the cause (module docstring)."""
    location = cfg.pretrained
    path = Path(location).expanduser()
    if path.is_dir():
        return _check_folder(cfg, path, f"folder {path}")
    if path.exists():
        raise UserError(f"model.pretrained={location!r}: {path} is a file, not a model folder; {_hint(cfg.preset)}")
    if cfg.preset == "tiny" or not _HUB_ID.match(location):
        raise UserError(f"model.pretrained={location!r}: folder {path} does not exist; {_hint(cfg.preset)}")
    if not hub_offline():
        return None  # a hub id: diffusers downloads or reads the cache; failures end in _missing
    files = {name: try_to_load_from_cache(location, f"{name}/{marker}", revision=cfg.revision)
             for name, marker in COMPONENTS.items()}
    absent = [name + "/" for name, found in files.items() if not isinstance(found, str)]
    if len(absent) == len(files):
        raise UserError(f"model.pretrained={location!r}: no folder of that name exists, and as a hub id it is not in "
                        f"the HF cache ({hub_constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE=1; download it where you "
                        f"have network (`hf download {location}`) or set model.pretrained to {SD_FOLDER}")
    if absent:
        raise UserError(f"model.pretrained={location!r}: the HF cache holds it without {' '.join(absent)} (an "
                        f"incomplete download) while HF_HUB_OFFLINE=1; re-run `hf download {location}` where you "
                        "have network, or set model.pretrained to a complete local folder")
    return _check_folder(cfg, Path(files["vae"]).parents[1], "the cached snapshot")


def load_base(cfg: ModelConfig, device: str | torch.device = "cpu") -> BaseModel:
    """Load the frozen base model named by ``cfg`` (all parameters ``requires_grad=False``)."""
    if cfg.preset not in PRESETS:
        raise UserError(f"model.preset={cfg.preset!r}: expected one of {', '.join(PRESETS)}")
    location = cfg.pretrained
    kwargs = {"revision": cfg.revision} if cfg.revision else {}
    check_pretrained(cfg)
    try:
        unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", **kwargs)
        if cfg.preset == "tiny":
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
    config = DDPMScheduler.load_config(location, subfolder="scheduler", **kwargs)
    return {k: v for k, v in dict(config).items() if not k.startswith("_") or k == "_class_name"}


def file_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every weight/config file under ``folder`` (relative path -> hex digest)."""
    folder = Path(folder)
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".safetensors", ".json", ".txt"} and path.name != "manifest.json":
            hashes[str(path.relative_to(folder))] = sha256_file(path)
    return hashes


def verify_tiny(folder: str | Path) -> dict:
    """Check the shipped tiny base against its recorded manifest (hashes + recipe)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"{manifest_path}: missing; the tiny base must be pretrained first (taxadiffusion pretrain)")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise UserError(f"{manifest_path}: no 'files' hashes to check the tiny base against")
    actual = file_hashes(folder)
    for name, digest in manifest["files"].items():
        if actual.get(name) != digest:
            raise UserError(f"{folder / name}: sha256 does not match {manifest_path} (file changed or missing)")
    return manifest

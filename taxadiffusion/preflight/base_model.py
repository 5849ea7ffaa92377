"""``model.pretrained`` before anything loads it: there (a local folder, or the HF cache when offline), complete
(every component's config and weights file), and made for ``dataset.resolution``.

Today the ``base`` stage finds a wrong resolution only after ``shard`` wrote every image at it. The native resolution
is read from two small configs, as :class:`taxadiffusion.models.base.BaseModel` computes it: the UNet's
``sample_size`` times the VAE's downsampling ``2 ** (len(block_out_channels) - 1)`` (SD1.5: 64 x 8 = 512; tiny:
16 x 2 = 32). Whether the folder is there is :func:`taxadiffusion.models.base.check_pretrained`, the check ``base``
runs first; the tiny base is checked against its shipped hashes, as ``base`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from taxadiffusion.config import ModelConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json
from taxadiffusion.models.base import check_pretrained, hub_offline, verify_tiny

# component -> the weight files diffusers / transformers load (any one of them); the tiny VAE has no weights
WEIGHTS = {"unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
           "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
           "text_encoder": ("model.safetensors", "pytorch_model.bin")}


@dataclass
class BaseFacts:
    """What the check found: problems (one line each), the native resolution and VAE factor when known."""

    problems: list = field(default_factory=list)
    native: Optional[int] = None
    vae_scale: Optional[int] = None


def model_folder(cfg: ModelConfig) -> Optional[Path]:
    """The folder holding the base's components: ``model.pretrained`` itself, or its HF cache snapshot; None for
    a hub id that is not cached while online (then only its two configs are fetched, see :func:`_configs`)."""
    path = Path(cfg.pretrained).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(cfg.pretrained, "unet/config.json", revision=cfg.revision)
    return Path(found).parents[1] if isinstance(found, str) else None


def _configs(cfg: ModelConfig, folder: Optional[Path]) -> tuple[dict, dict]:
    if folder is not None:
        return read_json(folder / "unet" / "config.json"), read_json(folder / "vae" / "config.json")
    from huggingface_hub import hf_hub_download  # online, not cached: two small files, diffusers fetches them anyway

    try:
        return tuple(read_json(hf_hub_download(cfg.pretrained, f"{name}/config.json", revision=cfg.revision))
                     for name in ("unet", "vae"))
    except Exception as exc:  # noqa: BLE001 - any hub failure (network, 404, auth) is the same problem here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"model.pretrained={cfg.pretrained!r}: cannot fetch its unet/ and vae/ configs ({first})") \
            from None


def native_resolution(unet: dict, vae: dict, where: str) -> tuple[int, int]:
    """(native resolution, VAE factor) from the two configs; a config without the keys is a one-line error."""
    try:
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        return int(unet["sample_size"]) * scale, scale
    except (KeyError, TypeError, ValueError):
        raise UserError(f"model.pretrained={where!r}: unet/config.json has no integer sample_size or vae/config.json "
                        "no block_out_channels list (not a diffusers base model folder)") from None


def _missing_weights(cfg: ModelConfig, folder: Path) -> list[str]:
    """Components whose config is there but no weights file (an interrupted download)."""
    problems = []
    for name, files in WEIGHTS.items():
        if name == "vae" and cfg.preset == "tiny":
            continue  # the space-to-depth view has no weights
        if not any((folder / name / f).is_file() for f in files):
            problems.append(f"model.pretrained={cfg.pretrained!r}: {folder / name} has no weights file ({files[0]}); "
                            "the download is incomplete: download it again, or point model.pretrained at a complete "
                            "folder")
    return problems


def base_model_facts(cfg: ModelConfig, resolution: int) -> BaseFacts:
    """The problems of ``model.pretrained`` with ``dataset.resolution`` (module docstring)."""
    facts = BaseFacts()
    try:
        check_pretrained(cfg)
        folder = model_folder(cfg)
        if folder is None and hub_offline():  # check_pretrained said it is cached: a race with a cache cleanup
            raise UserError(f"model.pretrained={cfg.pretrained!r}: not found in the HF cache")
        if folder is not None:
            facts.problems += _missing_weights(cfg, folder)
            if cfg.preset == "tiny":
                verify_tiny(folder)
        facts.native, facts.vae_scale = native_resolution(*_configs(cfg, folder), cfg.pretrained)
    except UserError as exc:
        facts.problems.append(str(exc))
        return facts
    if resolution != facts.native:
        facts.problems.append(
            f"dataset.resolution={resolution} differs from the native resolution {facts.native} px of the "
            f"{cfg.preset} base model.pretrained={cfg.pretrained!r} (unet sample_size x vae factor "
            f"{facts.vae_scale}); set dataset.resolution: {facts.native} (or model.pretrained to a base made for "
            f"{resolution} px)")
    return facts

"""The ``base`` stage: resolve and check the base model; for sd15, cache the VAE posteriors of the training images."""

from __future__ import annotations

from pathlib import Path

from taxadiffusion.config import ModelConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, write_json
from taxadiffusion.models.base import BaseModel, load_base, verify_tiny
from taxadiffusion.training.latent_chunks import write_index
from taxadiffusion.training.latents import write_latents


def check_resolution(base: BaseModel, cfg: ModelConfig, resolution: int) -> None:
    """The training images must be at the base model's native size (its UNet sample size x the VAE factor)."""
    if resolution != base.resolution:
        raise UserError(f"params.yaml dataset.resolution={resolution} differs from the native resolution "
                        f"{base.resolution} px of the {cfg.preset} base model.pretrained={cfg.pretrained!r}; "
                        f"set dataset.resolution: {base.resolution} (or model.pretrained to a base made for "
                        f"{resolution} px)")


def prepare_base(cfg: ModelConfig, out_dir: str | Path, shards: str | Path, latents_dir: str | Path, *,
                 resolution: int, device: str = "cpu", state=None) -> dict:
    """Write ``<out_dir>/base.json`` (what the base is) and ``<latents_dir>/`` (``latents.json``; sd15 with
    ``model.cache_latents`` also the latent chunks).

    tiny: verifies the shipped weights against ``assets/tiny-base/manifest.json`` (hash + recipe).
    sd15: loads every component once (a missing model is a one-line error naming ``model.pretrained``)
    and, with ``model.cache_latents``, streams the training images through the VAE once
    (:func:`taxadiffusion.training.latents.write_latents`). ``resolution`` (``dataset.resolution``) must be the base
    model's native one. ``latents_dir`` is built whole under a temporary name and swapped in. ``state`` (accelerate
    ``PartialState``; None: one process): every rank encodes its share of the chunks into rank 0's temporary
    folder; rank 0 alone writes the index and ``base.json``. The files are those of one process.
    """
    info: dict = {"preset": cfg.preset, "pretrained": cfg.pretrained, "revision": cfg.revision}
    if cfg.preset == "tiny":
        manifest = verify_tiny(cfg.pretrained)
        info["files"] = manifest["files"]
        info["recipe"] = manifest.get("recipe")
    base = load_base(cfg, device=device)
    check_resolution(base, cfg, resolution)
    size = int(base.unet.config.sample_size)
    info.update(
        resolution=base.resolution,
        latent_shape=[int(base.unet.config.in_channels), size, size],
        prediction_type=base.prediction_type,
        text_hidden=base.text_hidden,
        text_max_length=int(base.tokenizer.model_max_length),
        unet_parameters=sum(p.numel() for p in base.unet.parameters()),
    )
    encode = cfg.preset == "sd15" and cfg.cache_latents
    if state is not None and not state.is_main_process:
        if encode:  # rank 0's temporary folder; it swaps the folder in after the barrier in write_latents
            write_latents(base, shards, _shared(state, None), show_progress=False, state=state)
        return info
    with atomic_dir(latents_dir) as staging:
        index = None
        if encode:
            index = write_latents(base, shards, _shared(state, staging), state=state)
            info["cached_latents"] = index["cached"]
        write_index(staging, cfg.preset, index)
    write_json(Path(out_dir) / "base.json", info)
    return info


def _shared(state, staging: Path | None) -> Path:
    """Rank 0's ``staging`` folder, on every rank (one broadcast; ranks share a filesystem)."""
    if state is None or state.num_processes == 1:
        return staging
    from accelerate.utils import broadcast_object_list

    return Path(broadcast_object_list([str(staging) if staging is not None else None], from_process=0)[0])

"""The `tiny` preset: SD1.5's architecture family in miniature, built from files kept in the repo.

- Tokenizer: a real ``CLIPTokenizer`` (byte-level BPE, lower-case) whose merges spell out the words of the
  pretraining captions; any other word (a taxon name) falls back to characters, as rare words do in CLIP.
- Text encoder: a small ``CLIPTextModel`` (frozen, seeded random init; it plays the frozen CLIP encoder).
- "VAE": a lossless space-to-depth view (32x32x3 <-> 16x16x12, ``pixel_unshuffle``) with the
  ``encode``/``decode`` surface of diffusers' ``AutoencoderKL``, so the same training and sampling code
  serves SD1.5 latents and tiny pixels. Measured (docs/install.md): attention at 32x32 costs 5x more.
- UNet: ``UNet2DConditionModel`` with cross-attention at the 8x8 level only.

The UNet is pretrained once on the captioned *pretraining world* (``taxadiffusion.tools.pretrain``); its weights
ship in ``assets/tiny-base``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

TEXT_MAX_LENGTH = 32
TEXT_HIDDEN = 64


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-unicode map (as in transformers' tokenization_clip).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(words: list[str], out_dir: str | Path, max_length: int = TEXT_MAX_LENGTH) -> Path:
    """Write ``vocab.json``/``merges.txt``/``tokenizer_config.json`` for a CLIP BPE tokenizer.

    The vocabulary is every byte symbol (with and without the ``</w>`` word-end marker) plus, for each
    word in ``words``, the chain of left-to-right merges that builds it; unseen words stay characters.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[tuple[str, str]] = []
    seen = set()
    for word in sorted({w.lower() for w in words if w}):
        enc = "".join(_bytes_to_unicode()[b] for b in word.encode("utf-8"))
        parts = list(enc[:-1]) + [enc[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            pair = (left, right)
            left = left + right
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2)
    )
    return out_dir


def text_encoder_config(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH,
        hidden_act="quick_gelu",
        projection_dim=TEXT_HIDDEN,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def unet_config() -> dict:
    """UNet on the 16x16x12 space-to-depth view: channels (48, 96), cross-attention at 8x8 only.

    Measured on 2 cores (fp32): ~0.22 s per frozen-UNet training step at batch 32 and ~0.4 s per
    forward at batch 128 (benchmarks/README.md has the current figures).
    """
    return dict(
        sample_size=16,
        in_channels=12,
        out_channels=12,
        block_out_channels=[48, 96],
        layers_per_block=2,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers: number of heads for these blocks
        norm_num_groups=16,
    )


def scheduler_config() -> dict:
    """The tiny base's own noise schedule: v-prediction on a cosine schedule (docs/install.md:
    the recipe that drew recognisable animals on CPU). SD1.5 stays epsilon / scaled_linear."""
    return dict(
        _class_name="DDPMScheduler",
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
        steps_offset=1,
        set_alpha_to_one=False,
        skip_prk_steps=True,
    )


class SpaceToDepthVAE(ModelMixin, ConfigMixin):
    """Lossless "autoencoder": ``pixel_unshuffle`` by ``factor``; same call surface as ``AutoencoderKL``.

    ``encode(x)`` takes images in [-1, 1] and returns an object whose ``latent_dist.sample()`` /
    ``latent_dist.mode()`` are the latents; ``decode(z)`` returns ``(images,)`` or ``.sample``.
    ``block_out_channels`` has ``log2(factor) + 1`` entries so diffusers pipelines compute the right
    ``vae_scale_factor``.
    """

    @register_to_config
    def __init__(self, factor: int = 2, in_channels: int = 3, scaling_factor: float = 1.0, block_out_channels=(12, 12)):
        super().__init__()
        self.register_buffer("_dummy", torch.zeros(1), persistent=False)  # gives the module a device/dtype

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        z = F.pixel_unshuffle(x, self.config.factor)
        dist = _Deterministic(z)
        return _Output(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        x = F.pixel_shuffle(z, self.config.factor)
        return _Output(sample=x) if return_dict else (x,)


@dataclass
class _Output:
    latent_dist: object = None
    sample: torch.Tensor = None


class _Deterministic:
    def __init__(self, z):
        self.z = z

    def sample(self, generator=None):
        return self.z

    def mode(self):
        return self.z

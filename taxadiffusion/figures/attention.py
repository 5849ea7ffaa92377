"""Fig. S6: the UNet's cross-attention per taxonomic level, for taxa of one genus (docs/figures.md).

"The attention of level ``i``": the UNet's context is the sum ``c = sum_i E_i(h_i)`` (docs/method.md
§1.2) and ``to_k`` is linear without bias (SD1.5 and the tiny UNet: ``attention_bias`` false, no
``cross_attention_norm``), so the real cross-attention logits are exactly the sum over levels of
``Q (W_k E_i(h_i))^T``. The map of level ``i`` is the softmax of level ``i``'s own term, i.e. the attention
the UNet's queries pay when level ``i``'s module output alone is the context, read at the tokens of that
level's *name* (``"<level>: <name>"`` minus BOS, the ``<level>:`` prefix, EOS and padding: every row of a
softmax sums to one, so a mean over all token positions would be flat). It is averaged over heads, those
tokens, every cross-attention layer (each map resized bilinearly to the latent grid) and every denoising
step, for the conditional half of the guided batch only.

The queries come from an ordinary sampling run: :class:`LevelAttention` wraps each cross-attention
processor (``attn2``) of the diffusers UNet, calls the original processor unchanged (so the image is the
one the run draws) and records the extra maps with diffusers' own ``Attention`` methods.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

from taxadiffusion.core.lineage import image_seed, lineage_key
from taxadiffusion.figures import layout
from taxadiffusion.models.conditioner import lineage_texts
from taxadiffusion.models.taxa import TaxaModel
from taxadiffusion.sampling.denoise import make_scheduler, sample, to_uint8
from taxadiffusion.sampling.level_sampler import TaxaSampler


class RecordingProcessor(AttnProcessor):
    """A cross-attention processor that runs ``inner`` and hands the query input to ``owner``."""

    def __init__(self, inner, owner: "LevelAttention"):
        super().__init__()
        self.inner, self.owner = inner, owner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is not None:
            self.owner.record(attn, hidden_states, temb)
        return out


class LevelAttention:
    """Context manager: per-level attention maps ``[L, B, side, side]`` of a sampling run (module docstring).

    ``contexts``: ``[L, B, T, D]``, level ``i``'s module output per image; ``weights``: ``[L, B, T]``, the
    token weights (uniform over the name tokens) of each level's text. Before each UNet call set
    :attr:`rows`, the conditional rows of the batch.
    """

    def __init__(self, unet, contexts: torch.Tensor, weights: torch.Tensor, side: int):
        self.unet, self.contexts, self.weights, self.side = unet, contexts, weights, int(side)
        self.rows = slice(None)
        self.sums = torch.zeros(contexts.shape[0], contexts.shape[1], self.side, self.side, dtype=torch.float64)
        self.count = 0
        self._saved = None

    def __enter__(self) -> "LevelAttention":
        self._saved = dict(self.unet.attn_processors)
        self.unet.set_attn_processor({name: RecordingProcessor(proc, self) if name.endswith("attn2.processor")
                                      else proc for name, proc in self._saved.items()})
        return self

    def __exit__(self, *exc) -> None:
        self.unet.set_attn_processor(self._saved)

    @torch.no_grad()
    def record(self, attn, hidden_states: torch.Tensor, temb=None) -> None:
        x = hidden_states[self.rows]
        if attn.spatial_norm is not None:
            x = attn.spatial_norm(x, temb)
        if x.ndim == 4:  # as diffusers' AttnProcessor flattens a 2-d feature map
            x = x.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        b, n = x.shape[0], x.shape[1]
        query = attn.head_to_batch_dim(attn.to_q(x))
        side = int(round(n ** 0.5))
        for i in range(self.contexts.shape[0]):
            ctx = self.contexts[i].to(x.dtype)
            if attn.norm_cross:
                ctx = attn.norm_encoder_hidden_states(ctx)
            probs = attn.get_attention_scores(query, attn.head_to_batch_dim(attn.to_k(ctx)))  # [B*h, N, T]
            probs = probs.view(b, -1, n, probs.shape[-1]).mean(1)  # heads
            m = (probs * self.weights[i].to(probs)[:, None, :]).sum(-1).view(b, 1, side, side)
            self.sums[i] += F.interpolate(m.float(), size=(self.side, self.side), mode="bilinear",
                                          align_corners=False)[:, 0].double().cpu()
        self.count += 1  # one layer of one UNet call

    def maps(self) -> np.ndarray:
        return (self.sums / max(self.count, 1)).numpy()


def name_token_weights(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """``[len(texts), T]``: uniform weights on the tokens of the name in each ``"<key>: <name>"`` text
    (after BOS and the ``<key>:`` prefix, before EOS); all non-special tokens if the name was cut off."""
    length = int(tokenizer.model_max_length)
    out = torch.zeros(len(texts), length)
    for r, text in enumerate(texts):
        ids = tokenizer(text, padding="max_length", max_length=length, truncation=True).input_ids
        prefix = tokenizer(text.split(":", 1)[0] + ":").input_ids[:-1]  # BOS + the key tokens, no EOS
        eos = ids.index(tokenizer.eos_token_id, 1) if tokenizer.eos_token_id in ids[1:] else length
        span = range(len(prefix), eos) if len(prefix) < eos else range(1, max(eos, 2))
        out[r, list(span)] = 1.0 / len(span)
    return out


@torch.no_grad()
def level_contexts(model: TaxaModel, lineages: list[dict], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``E_i(h_i)`` for i = 0..k, ``[k + 1, B, T, D]``, and the name-token weights ``[k + 1, B, T]``."""
    hidden = model.hidden(lineages, k)  # [B, k + 1, T, D]
    outs = torch.stack([model.conditioner.encoders[i](hidden[:, i]) for i in range(k + 1)])
    texts = [lineage_texts(model.levels, lin, k)[: k + 1] for lin in lineages]
    weights = torch.stack([name_token_weights(model.cache.tokenizer, [t[i] for t in texts]) for i in range(k + 1)])
    return outs, weights


class _RowsUNet:
    """The UNet for ``sampling.sample``, telling the recorder where the conditional rows are."""

    def __init__(self, unet, recorder: LevelAttention, batch: int):
        self.unet, self.recorder, self.batch = unet, recorder, batch

    def __call__(self, latents, t, context):
        guided = latents.shape[0] == 2 * self.batch  # sampling.py puts [neg, cond]
        self.recorder.rows = slice(self.batch, None) if guided else slice(None)
        return self.unet(latents, t, context)


@torch.no_grad()
def attention_maps(sampler: TaxaSampler, lineages: list[dict], seeds: Sequence[int]):
    """Images (uint8 ``[B, H, W, 3]``) and per-level maps (``[k + 1, B, side, side]``) of one sampling run."""
    model, st, k = sampler.model, sampler.sampling, sampler.cut_off
    pairs = [sampler.context(lin) for lin in lineages]
    cond = torch.cat([c for c, _ in pairs])
    neg = torch.cat([n for _, n in pairs])
    contexts, weights = level_contexts(model, lineages, k)
    unet = model.base.unet
    with LevelAttention(unet, contexts, weights, side=sampler.latent_shape[-1]) as rec:
        latents = sample(_RowsUNet(unet, rec, len(lineages)), make_scheduler(st.sampler, model.base.scheduler_config),
                         cond, neg, list(seeds), sampler.latent_shape, st.steps, st.scale, st.guidance_range,
                         dtype=sampler.dtype)
    return to_uint8(model.base.decode_latents(latents)), rec.maps()


def attention_figure(sampler: TaxaSampler, group: tuple, taxa: list[tuple], seed: int, tile: int):
    """Fig. S6 as a PIL image: one row per taxon, the generated image then one overlay per level."""
    levels, k = sampler.model.levels, sampler.cut_off
    lineages = [{lv: (lin[i] if i <= k else "None") for i, lv in enumerate(levels)} for lin in taxa]
    seeds = [image_seed(seed, lineage_key(lin), 0) for lin in taxa]
    images, maps = attention_maps(sampler, lineages, seeds)
    images = images.numpy()
    rows = []
    for b, lin in enumerate(taxa):
        tiles = [layout.tile(images[b], tile)] + [layout.overlay(images[b], maps[i, b], tile) for i in range(k + 1)]
        rows.append((lin[-1], tiles))
    headers = ["generated"] + [f"{levels[i]}\n{group[i] if i < k else '(the row)'}" for i in range(k + 1)]
    title = f"cross-attention per level, {levels[k - 1]} {group[-1]} ({sampler.sampling.steps} steps, scale " \
            f"{sampler.sampling.scale:g})"
    return layout.table(rows, headers, tile, gap_before=(1,), title=title), seeds

"""What the ``evaluate`` stage reads, loaded once before any metric: its folders (:class:`EvaluatePaths`), the
backbones ``evaluate.backbones`` asks for (:class:`Backbones`), and the real and generated images with the
plan, the training counts and the feature cache (:class:`Inputs`, from :func:`load_inputs`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.metrics.cache import FeatureCache
from taxadiffusion.metrics.data import ImageSet, group_names, read_generated, read_plan, read_real
from taxadiffusion.metrics.pairing import DIVERSITY, RULES
from taxadiffusion.metrics.probe import load_probe
from taxadiffusion.metrics.protocol import AUTHORS, AUTHORS_LPIPS_BATCH, reference_splits
from taxadiffusion.metrics.rarity import train_counts


@dataclass(frozen=True)
class EvaluatePaths:
    """The folders the ``evaluate`` stage reads and writes (its arguments in dvc.yaml, same order)."""

    shards: Path  # WebDataset shards: the real images and their index.json
    generated: Path  # generated images + manifest.csv (+ plan.csv)
    probe: Path  # the trained probe (stage probe)
    out: Path  # summary.json, tables, <evaluate.group_level>/, plots/
    cache: Path  # real-image feature cache


class Backbones:
    """Everything ``evaluate.backbones`` asks for, loaded up front so that missing weights fail before any work."""

    def __init__(self, cfg: EvaluateConfig, levels: list[str], probe_dir: str | Path):
        asked = set(cfg.backbones)
        # The probe is always computed: it is the backbone that needs no downloaded weights.
        self.probe = load_probe(probe_dir, levels)
        self.features = [self.probe]
        self.probe.name = "probe"
        self.probe.info = {
            "metric": "Fréchet distance, paired 1-cos, per-level top-1",
            "impl": "small CNN taxonomy classifier trained on the real train split (stages/probe.py)",
            "features": f"penultimate, {self.probe.config['feature_dim']}-d",
            "resolution": self.probe.config["resolution"],
            "weights": str(Path(probe_dir) / "probe.safetensors"),
            "real_test_acc": {lv: v["acc"] for lv, v in self.probe.config.get("test_acc", {}).items()},
            "pairing": RULES[cfg.protocol],
            "diversity": f"1-cos, {DIVERSITY}",
        }
        # The pretrained backbones are imported only when asked for: torch-fidelity, lpips and open_clip
        # are heavy, and the default run (probe only) never needs them.
        if "inception" in asked:
            from taxadiffusion.metrics.backbones import InceptionBackbone

            self.features.append(InceptionBackbone(cfg.inception_weights, pytorch_fid=cfg.protocol == AUTHORS))
        from taxadiffusion.metrics.lpips_metric import LPIPSMetric, lpips_nets

        self.lpips = []
        for net, weights in lpips_nets(cfg):  # evaluate.lpips_weights is the trunk file of evaluate.lpips_net
            self.lpips.append(LPIPSMetric(net, weights))
            self.lpips[-1].info.update(pairing=RULES[cfg.protocol], diversity=f"LPIPS, {DIVERSITY}")
            if cfg.protocol == AUTHORS:
                self.lpips[-1].info.update(resolution="512 x 512, stretched (PIL bilinear)",
                                           average=f"mean of per-batch means, {AUTHORS_LPIPS_BATCH} pairs a batch")
        self.bioclip = None
        self.zeroshot = None  # BioCLIP as a classifier over the shards' species (metrics/zeroshot.py attach)
        if "bioclip" in asked:
            from taxadiffusion.metrics.bioclip import BioCLIPScorer

            self.bioclip = BioCLIPScorer(cfg.bioclip_model, cfg.bioclip_template, levels)

    def info(self) -> dict:
        out = {b.name: b.info for b in self.features}
        out.update({m.name: m.info for m in self.lpips})
        if self.bioclip is not None:
            out[self.bioclip.name] = self.bioclip.info
        return out


@dataclass
class Inputs:
    """Everything the metrics are computed from; one per run of the stage. A "class" here (``gen_classes``,
    ``per_class``) is a taxon of ``evaluate.group_level``: the class in Table S2, an order when grouped by order."""

    cfg: EvaluateConfig
    levels: list[str]
    bb: Backbones
    gen: ImageSet
    manifest: pd.DataFrame  # generate's manifest.csv (its sampler settings go to summary.json ``data``)
    real: ImageSet  # the reference: the ``evaluate.real_split`` images of the shards (``authors``: train + test)
    plan: Optional[pd.DataFrame]  # generate's plan.csv, when there is one (per-group ``capped``)
    n_train: Counter  # training images per taxon, for the accuracy by rarity
    cache: FeatureCache
    gen_size: tuple[int, int]  # (W, H) of the generated images: real images are compared at this size
    gen_classes: dict[str, list[int]]  # group -> generated image indices (sorted: the pairing order)
    real_classes: dict[str, list[int]]  # group -> real image indices (sorted: the pairing order)
    train: ImageSet  # the real train split: the floor's other real images, the memorisation check's training set
    train_classes: dict[str, list[int]]  # group -> train image indices (sorted by key)

    def reference(self) -> list[int]:
        """The real images of every generated class: the pooled metrics' reference."""
        return [i for c in self.gen_classes for i in self.real_classes.get(c, [])]


def load_inputs(cfg: EvaluateConfig, levels: list[str], paths: EvaluatePaths) -> Inputs:
    bb = Backbones(cfg, levels, paths.probe)  # first: missing weights fail before the images are read
    gen, manifest = read_generated(paths.generated, levels)
    real = read_real(paths.shards, reference_splits(cfg), levels)  # evaluate.protocol, evaluate.real_split
    plan = read_plan(paths.generated)
    n_train = train_counts(paths.shards, levels)
    train = _train_split(real, paths.shards, levels)
    at = levels.index(cfg.group_level)  # Params checked it is one of levels, at or above generate.target_level
    names = group_names(at, gen, real, train)
    return Inputs(cfg=cfg, levels=levels, bb=bb, gen=gen, manifest=manifest, real=real, plan=plan, n_train=n_train,
                  cache=FeatureCache(paths.cache), gen_size=gen.image_size(), gen_classes=gen.by_group(at, names),
                  real_classes=real.by_group(at, names), train=train, train_classes=train.by_group(at, names))


def _train_split(real: ImageSet, shards: Path, levels: list[str]) -> ImageSet:
    """The real train split: the reference's own train images when it has them (``train+test``: the same encoded
    bytes, not a second copy), else read from the shards. Held encoded, as the reference (data.py)."""
    if "train" not in set(real.splits):
        return read_real(shards, ["train"], levels)
    out = ImageSet(levels=list(levels))
    for i, split in enumerate(real.splits):
        if split == "train":
            out.add(real.sources[i], real.names[i], real.keys[i], real.lineages[i], split)
    return out

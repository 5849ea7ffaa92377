"""Typed configuration: ``params.yaml`` -> one dataclass per section -> the section (or plain values).

``params.yaml`` is the only source of defaults: no field below has a default value, so a key missing from
the file is a one-line error naming it, never a silently substituted value (the paper's values are given
in ``params.yaml``'s comments). Each section validates itself where it is built
(``__post_init__``): types, ranges and choices, so no stage starts on a value it cannot use. Unknown keys
are errors too (a typo must not be ignored). Stages pass sections, not the whole :class:`Params`, to the
library, so DVC's per-stage ``params:`` lists in ``dvc.yaml`` stay honest.

Seeds: the top-level ``seed`` seeds the *experiment* (training of every level and method, the generation
plan and image noise, the probe); ``synthesize.seed`` (the synthetic world) and ``prepare.seed`` (the
train/test split) define the *data* and stay fixed while ``dvc exp run -S seed=1,2`` repeats an experiment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taxadiffusion.config.checks import bad, check_choice, check_int, check_list
from taxadiffusion.config.compute import ComputeConfig
from taxadiffusion.config.data import DatasetConfig, PrepareConfig, ShardConfig, SynthesizeConfig
from taxadiffusion.config.evaluation import EvaluateConfig, ProbeConfig
from taxadiffusion.config.file import read_params_dict
from taxadiffusion.config.sampling import FiguresConfig, GenerateConfig, SamplingConfig
from taxadiffusion.config.training import ModelConfig, PreviewConfig, TrainConfig
from taxadiffusion.config.vocab import METHOD_NAMES, RANK_ORDER
from taxadiffusion.core.errors import UserError


@dataclass(frozen=True)
class Experiment:
    """What every training and sampling run of one experiment shares (the group that used to travel as three
    arguments): the base-model settings (``model``), the taxonomic levels coarse -> fine, and the experiment
    ``seed`` (training, generation plan and noise, probe). :attr:`Params.experiment` builds it."""

    model: ModelConfig
    levels: list
    seed: int

    def __post_init__(self):
        object.__setattr__(self, "levels", list(self.levels))


@dataclass
class Params:
    """All of params.yaml. Top-level keys are the ones users sweep with ``dvc exp run -S``."""

    seed: int  # the experiment: training, generation plan and noise, probe (module docstring)
    guidance_scale: float  # TaxaGuide / CFG scale s (diffusers convention, s = 1 + w)
    num_inference_steps: int
    methods: list
    # Ordered coarse -> fine; each item names its parent stage output (DVC foreach has no "previous item").
    levels: dict
    dataset: DatasetConfig
    synthesize: SynthesizeConfig
    prepare: PrepareConfig
    shard: ShardConfig
    model: ModelConfig
    train: TrainConfig
    generate: GenerateConfig
    probe: ProbeConfig
    evaluate: EvaluateConfig
    figures: FiguresConfig
    preview: PreviewConfig
    compute: ComputeConfig  # how stages run (processes, micro-batch, logging): listed by no stage, hashed nowhere
    sampling: SamplingConfig = field(init=False)  # derived, not a key of params.yaml

    def __post_init__(self):
        check_int("seed", self.seed, 0)
        if not isinstance(self.levels, dict) or not self.levels:
            raise bad("levels", self.levels, "a mapping of level names (coarse to fine) to {parent: ...}")
        for name, spec in self.levels.items():
            if not isinstance(name, str) or not name or not isinstance(spec, dict):
                raise bad(f"levels.{name}", spec, "{parent: <previous level or base>}")
        # Known ranks in their biological order: a list written fine -> coarse would pass every other check and
        # then make most rows inconsistent_lineage at prepare (unknown names: prepare checks the data instead).
        ranks = [(RANK_ORDER.index(n.lower()), n) for n in self.levels if n.lower() in RANK_ORDER]
        for (i, finer), (j, coarser) in zip(ranks, ranks[1:]):
            if j <= i:
                raise bad("levels", list(self.levels), f"ranks coarse -> fine, but '{coarser}' is listed after "
                          f"'{finer}' (in order: {' > '.join(n for _, n in sorted(ranks))})")
        for i, method in enumerate(check_list("methods", self.methods)):
            check_choice(f"methods[{i}]", method, METHOD_NAMES)
        check_choice("generate.target_level", self.generate.target_level, tuple(self.levels))
        check_choice("figures.embedding_level", self.figures.embedding_level, tuple(self.levels))
        check_choice("evaluate.group_level", self.evaluate.group_level, tuple(self.levels))
        above = list(self.levels)[: list(self.levels).index(self.generate.target_level) + 1]
        if self.evaluate.group_level not in above:
            # generated images name no taxon below the target level (plan.csv: "None"): one group of everything
            raise bad("evaluate.group_level", self.evaluate.group_level,
                      f"a level at or above generate.target_level: one of {', '.join(above)}")
        check_choice("prepare.finest_required", self.prepare.finest_required, tuple(self.levels))
        # Condition dropout drops at most one level per sample with probability p each (docs/method.md §2):
        # that is a distribution only while len(levels) * p <= 1.
        limit = 1.0 / len(self.levels)
        if self.train.level_dropout > limit + 1e-12:
            raise bad("train.level_dropout", self.train.level_dropout,
                       f"a probability per level in [0, 1/{len(self.levels)}] = [0, {limit:.4g}] "
                       "(at most one level is dropped per sample)")
        g = self.generate
        self.sampling = SamplingConfig(g.sampler, self.num_inference_steps, self.guidance_scale, g.guidance,
                                       tuple(g.guidance_range), g.dtype)
        self.guidance_scale = self.sampling.scale

    @property
    def level_names(self) -> list[str]:
        return list(self.levels.keys())

    @property
    def experiment(self) -> Experiment:
        return Experiment(self.model, self.level_names, self.seed)


_CLASSES = {
    "dataset": DatasetConfig,
    "synthesize": SynthesizeConfig,
    "prepare": PrepareConfig,
    "shard": ShardConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "probe": ProbeConfig,
    "evaluate": EvaluateConfig,
    "figures": FiguresConfig,
    "preview": PreviewConfig,
    "compute": ComputeConfig,
}


def _keys(cls, data: Any, where: str) -> dict:
    """``data`` as the keyword arguments of ``cls``: exactly its init fields, else a one-line error."""
    label = f"section '{where}'" if where else "the top level"
    if not isinstance(data, dict):
        raise UserError(f"params.yaml: {label} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise UserError(f"params.yaml: unknown key(s) {unknown} in {label}")
    missing = [n for n in names if n not in data]
    if missing:
        prefix = f"{where}." if where else ""
        raise UserError(f"params.yaml: missing key(s) {[prefix + n for n in missing]} "
                        "(params.yaml is the only source of defaults: copy them from the repository's params.yaml)")
    return dict(data)


def params_from_dict(data: dict) -> Params:
    """Build :class:`Params` from a parsed params.yaml mapping (unknown or missing keys are errors)."""
    kwargs = _keys(Params, data or {}, "")
    for key, cls in _CLASSES.items():
        kwargs[key] = cls(**_keys(cls, kwargs[key], key))
    return Params(**kwargs)


def section_from_dict(name: str, data: dict):
    """One section (e.g. ``"model"``) from its mapping, validated like :func:`params_from_dict` does."""
    cls = _CLASSES[name]
    return cls(**_keys(cls, data, name))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` into :class:`Params` (one-line errors for anything wrong)."""
    return params_from_dict(read_params_dict(path))

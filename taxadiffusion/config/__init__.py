"""Typed configuration: ``params.yaml`` -> one dataclass per section -> the section (or plain values).

The one import path for every part of the package: ``from taxadiffusion.config import TrainConfig, load_params``.
Modules by concept: ``vocab`` (every allowed-value tuple, each defined once), ``checks`` (one value each),
``file`` (reading the YAML as DVC does), ``data`` / ``training`` / ``sampling`` / ``evaluation`` (the sections'
dataclasses, validated in ``__post_init__``), ``params`` (the whole file: :class:`Params`, :func:`load_params`).
"""

from taxadiffusion.config.compute import ComputeConfig
from taxadiffusion.config.data import DatasetConfig, PrepareConfig, ShardConfig, SynthesizeConfig
from taxadiffusion.config.evaluation import EvaluateConfig, ProbeConfig
from taxadiffusion.config.file import read_params_dict
from taxadiffusion.config.params import Experiment, Params, load_params, params_from_dict, section_from_dict
from taxadiffusion.config.sampling import FiguresConfig, GenerateConfig, SamplingConfig
from taxadiffusion.config.training import ModelConfig, PreviewConfig, TrainConfig
from taxadiffusion.config.vocab import (
    BACKBONES,
    BASELINE_BUDGETS,
    CHECK_IMAGES,
    DATASETS,
    DTYPE_NAMES,
    GUIDANCES,
    METHOD_NAMES,
    MIXED_PRECISION,
    NOISE_SCHEDULES,
    PREPROCESS,
    PRESETS,
    RANK_ORDER,
    SAMPLERS,
    SPECIES_TEXTS,
)

__all__ = [
    "BACKBONES", "BASELINE_BUDGETS", "CHECK_IMAGES", "DATASETS", "DTYPE_NAMES", "GUIDANCES", "METHOD_NAMES",
    "MIXED_PRECISION", "NOISE_SCHEDULES", "PREPROCESS", "PRESETS", "RANK_ORDER", "SAMPLERS", "SPECIES_TEXTS",
    "ComputeConfig", "DatasetConfig", "EvaluateConfig", "Experiment", "FiguresConfig", "GenerateConfig",
    "ModelConfig", "Params", "PrepareConfig", "PreviewConfig", "ProbeConfig", "SamplingConfig", "ShardConfig",
    "SynthesizeConfig", "TrainConfig", "load_params", "params_from_dict", "read_params_dict", "section_from_dict",
]

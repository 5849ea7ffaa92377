"""The probe: a small CNN taxonomy classifier (one linear head per level) trained on the real train split.

It is the evaluation backbone that is always available (no downloaded weights): its penultimate features give
a Fréchet distance and a paired perceptual distance, and its heads give the per-level top-1 accuracy of
generated images for the taxon they were drawn for. Its own accuracy on the real test split is stored beside
it so its numbers can be judged. Not a paper metric (the paper uses Inception FID, LPIPS and BioCLIP;
docs/method.md §5); a stand-in for machines without those weights.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from taxadiffusion.config import ProbeConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path, read_json, sha256_file, write_json
from taxadiffusion.metrics.data import read_index, read_real

log = logging.getLogger(__name__)

# The probe works on small images whatever the generation resolution (512 px for SD1.5): it is a cheap
# taxonomy-aware backbone, not a fidelity metric at full resolution.
MAX_RESOLUTION = 64
WEIGHTS = "probe.safetensors"
CONFIG = "config.json"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ProbeNet(nn.Module):
    """conv(w, /2) -> conv(2w) -> conv(4w, /2) -> conv(4w, /2) -> global mean -> 4w features -> heads.

    Sized to train 600 steps at batch 64 on 32 px in well under a minute on 2 CPU cores (the stride-2 stem
    keeps full-resolution activations out of the step: ~40% faster than a stride-1 stem at the same width)."""

    def __init__(self, n_classes: list[int], width: int = 32, resolution: int = 32):
        super().__init__()
        self.resolution = resolution
        w = width
        self.body = nn.Sequential(_block(3, w, 2), _block(w, 2 * w, 1), _block(2 * w, 4 * w, 2),
                                  _block(4 * w, 4 * w, 2))
        self.feature_dim = 4 * w
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, n) for n in n_classes)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, r, r]`` in [-1, 1] at the probe's resolution."""
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.features(x)
        return [head(f) for head in self.heads]


def _augment(x: torch.Tensor, max_shift: float, gen: torch.Generator, max_noise: float = 0.1) -> torch.Tensor:
    """Horizontal flips, small translations (one affine resample for the whole batch) and pixel noise.

    The noise (per-image sigma up to ~13/255) matters: samples of a small diffusion model are grainy, and a
    probe trained on clean images only loses most of its species accuracy under sigma = 10/255 noise."""
    n = x.shape[0]
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = flip
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * max_noise
    return x + sigma * torch.randn(x.shape, generator=gen)


MISSING = (None, "None")  # a name a partial lineage does not give (docs/method.md §4)


def _label_arrays(lineages: list[tuple], classes: dict[str, list[str]], levels: list[str]) -> np.ndarray:
    """``[N, L]`` int labels, -1 where a name is not in the probe's vocabulary."""
    lookup = [{name: j for j, name in enumerate(classes[lv])} for lv in levels]
    labels = [[lookup[k].get(name, -1) for k, name in enumerate(lin)] for lin in lineages]
    return np.array(labels, dtype=np.int64).reshape(len(lineages), len(levels))


class Probe:
    """A trained probe: ``features`` (penultimate), ``predict`` (label per level) on uint8 images."""

    def __init__(self, net: ProbeNet, config: dict, path: Path | None = None):
        self.net = net.eval()
        self.config = config
        self.levels: list[str] = config["levels"]
        self.classes: dict[str, list[str]] = config["classes"]
        self.path = path

    @property
    def cache_id(self) -> str:
        """Changes whenever the weights do, so cached real features of an older probe are never reused."""
        digest = sha256_file(self.path / WEIGHTS, 16) if self.path else "memory"
        return f"probe|{digest}"

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Penultimate features of uint8 ``[N, H, W, 3]`` images -> ``[N, feature_dim]``."""
        out = [
            self.net.features(self.net.prepare(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))))
            for s in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.net.feature_dim), np.float32)

    @torch.no_grad()
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Heads applied to (cached) penultimate features -> ``[N, L]`` predicted label indices."""
        f = torch.from_numpy(np.asarray(features, dtype=np.float32))
        if not len(f):
            return np.zeros((0, len(self.levels)), np.int64)
        return torch.stack([h(f).argmax(1) for h in self.net.heads], dim=1).numpy()

    def labels(self, lineages: list[tuple]) -> np.ndarray:
        return _label_arrays(lineages, self.classes, self.levels)

    def accuracy(self, features: np.ndarray, lineages: list[tuple]) -> dict:
        """Top-1 accuracy per level over images whose taxon the probe knows; ``unseen`` counts the others."""
        pred = self.predict_features(features)
        return level_accuracy(pred, self.labels(lineages), self.levels)


def level_accuracy(pred: np.ndarray, labels: np.ndarray, levels: list[str]) -> dict:
    out = {}
    for k, lv in enumerate(levels):
        known = labels[:, k] >= 0 if len(labels) else np.zeros(0, bool)
        n = int(known.sum())
        out[lv] = {
            "acc": float((pred[known, k] == labels[known, k]).mean()) if n else None,
            "n": n,
            "unseen": int(len(labels) - n),
        }
    return out


def train_probe(train_images: np.ndarray, train_lineages: list[tuple], levels: list[str], cfg: ProbeConfig,
                seed: int) -> Probe:
    """Train the probe (``ProbeConfig``: steps, batch_size, lr, width) on uint8 ``[N, H, W, 3]`` images."""
    if len(train_images) == 0:
        raise UserError("probe: the real train split is empty; nothing to train on")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # Vocabulary = taxa of the train split: a generated or test image of a taxon the probe never saw is counted
    # as "unseen" rather than scored against a class it cannot predict.
    # Partial lineages (FishNet keeps rows named down to class only) train the probe on the levels they name:
    # a missing name is no class, and its label is ignored by the loss.
    classes = {lv: sorted({lin[k] for lin in train_lineages if lin[k] not in MISSING}) for k, lv in enumerate(levels)}
    resolution = int(train_images.shape[1])
    net = ProbeNet([len(classes[lv]) for lv in levels], width=cfg.width, resolution=resolution)
    x_all = torch.from_numpy(np.ascontiguousarray(train_images))  # uint8; converted per batch (memory)
    y_all = torch.from_numpy(_label_arrays(train_lineages, classes, levels))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.15)
    shift_px = max(1, resolution // 16)  # +-2 px at 32 px
    max_shift = shift_px * 2.0 / resolution  # affine_grid units: the image spans [-1, 1]
    net.train()
    start = time.time()
    for step in (bar := tqdm(range(cfg.steps), desc="probe", leave=False)):
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x = _augment(net.prepare(x_all[idx]), max_shift, gen)
        y = y_all[idx]
        outs = net(x)
        # Mean cross-entropy over levels: every level gets an equal say in the shared features.
        loss = sum(F.cross_entropy(o, y[:, k], ignore_index=-1) for k, o in enumerate(outs)
                   if bool((y[:, k] >= 0).any())) / len(outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        # this step's loss (it was the loss of up to 50 steps ago); tqdm redraws at its own pace
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    seconds = time.time() - start  # logged only: a time in config.json would make models/probe's hash differ per run
    log.info("probe: %d steps in %.1f s (final loss %.3f)", cfg.steps, seconds,
             loss.item() if cfg.steps else float("nan"))
    config = {
        "levels": list(levels),
        "classes": classes,
        "resolution": resolution,
        "width": cfg.width,
        "feature_dim": net.feature_dim,
        "train": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": seed, "n_images": len(x_all),
                  "augment": f"hflip, shift +-{shift_px}px, gaussian noise sigma<=0.1 (of [-1, 1])"},
    }
    return Probe(net.eval(), config)


def save_probe(probe: Probe, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    state = {k: v.contiguous() for k, v in probe.net.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / CONFIG, probe.config)
    probe.path = out_dir


def load_probe(probe_dir: str | Path, levels: list[str] | None = None) -> Probe:
    """A trained probe; a missing, unreadable or mismatched file is a one-line error naming it."""
    probe_dir = Path(probe_dir)
    weights, config_path = probe_dir / WEIGHTS, probe_dir / CONFIG
    for path in (weights, config_path):
        if not path.exists():
            raise UserError(f"{path}: not found (train the probe first: python stages/probe.py / dvc repro probe)")
    config = read_json(config_path)
    if levels is not None and config["levels"] != list(levels):
        raise UserError(f"{config_path}: probe levels {config['levels']} differ from params.yaml levels "
                        f"{list(levels)}; re-run probe")
    net = ProbeNet([len(config["classes"][lv]) for lv in config["levels"]], config["width"], config["resolution"])
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:  # truncated / overwritten file
        raise UserError(f"{weights}: cannot be read ({str(exc).splitlines()[0]}); re-run the probe stage "
                        "(dvc repro probe)") from None
    try:
        net.load_state_dict(state)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"{weights}: does not match {config_path} ({str(exc).splitlines()[0]}); re-run probe") from None
    return Probe(net, config, probe_dir)


def fit_probe_on_shards(shards_dir: str | Path, out_dir: str | Path, levels: list[str], cfg: ProbeConfig,
                        seed: int) -> dict:
    """The ``probe`` stage: train on the real train split, measure per-level top-1 on the real test split,
    save ``probe.safetensors`` + ``config.json`` (docs/architecture.md ``probe``)."""
    index = read_index(shards_dir, levels)
    resolution = min(int(index.get("resolution", MAX_RESOLUTION)), MAX_RESOLUTION)
    size = (resolution, resolution)
    train = read_real(shards_dir, ["train"], levels)
    probe = train_probe(train.decode(range(len(train)), size), train.lineages, levels, cfg, seed)
    test = read_real(shards_dir, ["test"], levels) if index.get("test", {}).get("shards") else None
    if test is not None and len(test):
        feats = probe.features(test.decode(range(len(test)), size))
        probe.config["test_acc"] = probe.accuracy(feats, test.lineages)
    else:
        probe.config["test_acc"] = {lv: {"acc": None, "n": 0, "unseen": 0} for lv in levels}
    save_probe(probe, out_dir)
    accs = ", ".join(f"{lv} {v['acc']:.3f}" for lv, v in probe.config["test_acc"].items() if v["acc"] is not None)
    log.info("probe: real test top-1: %s", accs or "n/a (empty test split)")
    return probe.config

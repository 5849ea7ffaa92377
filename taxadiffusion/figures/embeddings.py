"""Fig. S2: taxon embeddings before and after the condition module, t-SNE by class, silhouettes.

For every taxon of the chosen level ``k`` (docs/figures.md "Fig. S2"):

- *text encoder*: the frozen text encoder's states ``h_i`` of the lineage texts ``"<level>: <name>"``,
  i = 0..k, exactly the inputs the condition module gets (docs/method.md §1.2), **summed over the levels**
  as the module sums its outputs, then mean-pooled over the ``T`` token positions;
- *condition module*: the trained context ``c^(k) = sum_{i<=k} E_i(h_i)`` the UNet sees at cut-off ``k``
  (``TaxaModel.condition``), mean-pooled over the ``T`` token positions the same way.

Both ``[n, D]`` sets are projected with scikit-learn's t-SNE (seeded, PCA init) and drawn side by side,
coloured by class; the silhouette score by class is computed in each original ``D``-dimensional space
(cosine and euclidean), not on the projection.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from taxadiffusion.models.conditioner import lineage_texts
from taxadiffusion.models.taxa import TaxaModel


@torch.no_grad()
def taxon_vectors(model: TaxaModel, taxa: list[dict], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(text, condition)``: mean-pooled ``[n, D]`` vectors of each taxon, one taxon per call (fixed shapes)."""
    text, cond = [], []
    for lin in taxa:
        states = model.cache(lineage_texts(model.levels, lin, k)[: k + 1])  # [k + 1, T, D]
        text.append(states.sum(0).mean(0).float().cpu().numpy())
        cond.append(model.condition([lin], k)[0].mean(0).float().cpu().numpy())
    return np.stack(text), np.stack(cond)


def silhouettes(vectors: np.ndarray, labels: list[str]) -> dict:
    """Silhouette by class (cosine, euclidean) in the original space; None with < 2 classes or no
    class of more than one taxon (the score is undefined there)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(set(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return {"cosine": None, "euclidean": None}
    return {m: float(silhouette_score(vectors, labels, metric=m)) for m in ("cosine", "euclidean")}


def tsne(vectors: np.ndarray, perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """2-d t-SNE (seeded, PCA init); the perplexity is capped at ``(n - 1) / 3`` for few points."""
    from sklearn.manifold import TSNE

    p = float(min(perplexity, max(1.0, (len(vectors) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=p, init="pca", random_state=int(seed), max_iter=1000).fit_transform(
        vectors.astype(np.float64))
    return xy, p


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(panels: list[tuple[str, np.ndarray, dict]], labels: list[str], names: list[str], title: str) -> bytes:
    """Side-by-side scatter plots (PNG bytes), coloured by class; taxon names written when there are few."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(labels))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0))
    for ax, (name, xy, sil) in zip(np.atleast_1d(axes), panels):
        for i, cls in enumerate(classes):
            sel = [j for j, lab in enumerate(labels) if lab == cls]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=28, color=cmap(i % cmap.N), label=cls)
        if len(names) <= 40:
            for (x, y), text in zip(xy, names):
                ax.annotate(text, (x, y), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"{name}\nsilhouette by class: cosine {_fmt(sil['cosine'])}, "
                     f"euclidean {_fmt(sil['euclidean'])}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="best", title="class", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def embedding_figure(model: TaxaModel, taxa: list[dict], k: int, perplexity: float, seed: int) -> tuple[bytes, dict]:
    """Fig. S2 for ``taxa`` of level ``k``: the PNG and what it shows (silhouettes, perplexity, pooling)."""
    level = model.levels[k]
    labels = [str(t[model.levels[0]]) for t in taxa]
    names = [str(t[level]) for t in taxa]
    text, cond = taxon_vectors(model, taxa, k)
    panels, info = [], {}
    for key, title, vectors in (("text_encoder", "frozen text encoder (sum of level states)", text),
                                ("condition_module", f"condition module output c^({k})", cond)):
        xy, used = tsne(vectors, perplexity, seed)
        sil = silhouettes(vectors, labels)
        panels.append((title, xy, sil))
        info[key] = {"silhouette": sil}
    png = plot(panels, labels, names, f"{len(taxa)} taxa of level '{level}', t-SNE (perplexity {used:.3g}), "
                                      "coloured by class")
    info.update(level=level, n_taxa=len(taxa), n_classes=len(set(labels)), perplexity=used, dim=int(text.shape[1]),
                pooling="mean over all token positions")
    return png, info

"""Stage ``figures``: the paper's supplementary figures as pipeline outputs (docs/figures.md).

- Fig. S2 (:mod:`.embeddings`): taxon embeddings of the frozen text encoder vs the trained condition module;
- Fig. S5 (:mod:`.guidance`): the same seeds at several guidance scales, next to real training images;
- Fig. S6 (:mod:`.attention`): the UNet's cross-attention per taxonomic level;
- the training previews' file names (drawn by :mod:`taxadiffusion.training.previews`, shown by the report).

:func:`.build.make_figures` is the ``figures`` stage. This module only names the files (the report reads
them without importing the model code).
"""

FIGURES_FILE = "figures.json"  # what each figure shows (taxa, seeds, settings) or why it was skipped
FIGURE_FILES = {"s2": "fig_s2_embeddings.png", "s5": "fig_s5_guidance.png", "s6": "fig_s6_attention.png"}
PREVIEW_DIR = "preview"  # training previews: under dvclive's plots/images/ of a run's log dir
PREVIEW_GLOB = f"plots/images/{PREVIEW_DIR}/*.png"  # relative to metrics/train/<level>

"""Evaluation: class-level FID / LPIPS / BioCLIP (supplement Table S2) plus an always-available probe backbone.

Modules: ``data`` (real shards + generated manifest), ``frechet`` (Fréchet distance), ``backbones`` (feature
extractors: Inception, probe), ``lpips_metric``, ``bioclip``, ``probe`` (the small taxonomy classifier),
``cache`` (real-feature cache), ``evaluate`` (the ``evaluate`` stage), ``tables`` (csv/md/plots/grids).
"""

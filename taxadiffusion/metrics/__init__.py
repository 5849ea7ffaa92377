"""Pipeline phase *metrics*: stages ``probe`` (``probe``: the small taxonomy classifier) and ``evaluate``.

``evaluate`` (the pass over the classes) reads its inputs once (``inputs``: paths, backbones, real and generated
images), scores each class (``class_metrics``), pools classes and taxonomic levels (``pooled``, ``stats``), and
writes the tables (``tables``), sample grids (``grids``) and the accuracy by rarity (``rarity``). The measures:
``frechet`` (Fréchet distance), ``backbones`` (Inception and how weights are found), ``lpips_metric``, ``bioclip``;
``data`` reads the real shards and the generated manifest; ``cache`` keeps real-image features between runs.
"""

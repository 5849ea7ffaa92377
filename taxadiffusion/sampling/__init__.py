"""Pipeline phase *sampling*: stage ``generate`` (``generate``, ``plan``), the trained-level sampler
(``level_sampler``), the denoising loop with TaxaGuide (``denoise``), and the person-facing ``taxadiffusion draw``
(``draw``).
"""

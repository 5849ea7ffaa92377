"""Pipeline phase *training*: stages ``base`` (``base``: the base model and its latents, ``latents``,
``latent_chunks``) and ``train@<level>`` (``train``: the loop; ``run``, ``noise``, ``specs``, ``checkpoints``,
``curves``, ``previews``).
"""

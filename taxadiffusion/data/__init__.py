"""Pipeline phase *data*: stages ``synthesize`` (``synthesize``, ``animals``), ``images`` (``images``: the image-root
fingerprint), ``prepare`` (``prepare``, ``readers/``, ``image_files``) and ``shard`` (``shard``; read back through
``shard_reader``).
"""

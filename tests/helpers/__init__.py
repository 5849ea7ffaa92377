"""Code the tests share (not tests): imported as ``helpers.<module>``. pytest makes ``tests/`` importable (its
default ``prepend`` import mode puts the folder of ``tests/conftest.py`` first on the module search path), in every
xdist worker too; nothing edits the search path by hand.

- :mod:`helpers.params`: params from the repository's params.yaml (typed sections, dicts, a tiny workspace's file)
- :mod:`helpers.stages`: running ``stages/<script>`` (subprocess or in-process), a free TCP port
- :mod:`helpers.models`: trained-level and prepared folders on the shipped tiny base
- :mod:`helpers.sd15`: the miniature Stable Diffusion 1.5 in the diffusers layout
- :mod:`helpers.metrics_world`: a five-species world of real shards and generated images for the metric tests
- :mod:`helpers.backbones`: random metric backbone weight files (Inception, AlexNet, a tiny open_clip)
- :mod:`helpers.report`: every input the report reads, and a whole report built from them
- :mod:`helpers.e2e`: a copy of this checkout as a fresh git repository, and dvc / git commands in it

Test modules import these, never one another or ``conftest`` (tests/test_test_layout.py checks it).
"""

"""Helpers of ``benchmarks/bench_gpu.py`` (run as a script, it imports them as ``gpu.*`` from its own folder): FLOP
counting and the paper's cost estimates (:mod:`gpu.flops`), the benchmark's model and data (:mod:`gpu.world`), the
training sides (:mod:`gpu.train_side`) and the sampling / UNet / encode rows (:mod:`gpu.gen_side`)."""

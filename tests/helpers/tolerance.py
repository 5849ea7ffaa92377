"""How far apart two launches of the same training may end (tests/test_launch.py, tests/test_pipeline_e2e.py).

Measured on 2 CPU cores (tiny preset, batch 4, 4 steps at lr 1e-3): 1 process x 4 micro-batches, 2 x 2 and 4 x 1
end within 9.2e-6 of each other in every trained parameter (the condition module; the LoRA within 1.8e-7): the same
draws (training/batches.py), float sums added in another order (local accumulation vs the DDP all-reduce).
"""

LAUNCH_TOLERANCE = 1e-4  # the largest parameter difference allowed: 10x the measured one

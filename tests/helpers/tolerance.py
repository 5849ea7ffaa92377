"""How far apart two launches of the same training may end (tests/test_launch.py, tests/test_pipeline_e2e.py).

Measured on 2 CPU cores (tiny preset, batch 4, 4 steps at lr 1e-3): 1 process x 4 micro-batches, 2 x 2 and 4 x 1
end within 5.0e-6 of each other in every trained parameter (2 x 2: 3.5e-6; stopped under 2 processes and resumed
under 1: 3.3e-6): the same draws (training/batches.py), float sums added in another order (local accumulation vs the
DDP all-reduce).
"""

LAUNCH_TOLERANCE = 1e-4  # the largest parameter difference allowed: 20x the largest measured one

"""The ``compute`` section of ``params.yaml``: how the stages run, never what they compute.

No stage lists this section under ``params`` in ``dvc.yaml``, so changing it re-runs nothing and never enters
``dvc.lock`` or a training run's resume fingerprint: the number of processes and nodes, the micro-batch
(gradient accumulation makes up the global ``train.batch_size``, docs/scale-out.md), data-loading workers,
gradient checkpointing, ``torch.compile``, and how often training logs and checkpoints. Each of them leaves the
trained model the same up to float summation order (the measured tolerance is in docs/scale-out.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from taxadiffusion.config.checks import bad, check_int, check_str

AUTO = "auto"


@dataclass
class ComputeConfig:
    processes: Union[int, str]  # workers per node: auto = one per visible GPU (1 without a GPU); or a number
    nodes: int  # machines; > 1 needs `launcher` (README "Scale out")
    launcher: str  # command prefix that runs the per-node launcher once on every node ("srun --ntasks-per-node=1")
    rdzv_endpoint: Optional[str]  # host:port of the multi-node rendezvous (null: this host, port 29500)
    micro_batch: int  # largest micro-batch per process (0: a process's whole share of train.batch_size at once)
    num_workers: int  # processes preparing the next micro-batches of training (0: in the training loop)
    gradient_checkpointing: bool
    compile: bool  # torch.compile the UNet (GPU; the first steps are slow)
    log_every: int  # optimiser steps between logged losses (the first and last are always logged)
    checkpoint_every: int  # optimiser steps between resumable checkpoints (0: none)

    def __post_init__(self):
        if self.processes != AUTO:
            check_int("compute.processes", self.processes, 1)
        check_int("compute.nodes", self.nodes, 1)
        if not isinstance(self.launcher, str):
            raise bad("compute.launcher", self.launcher, 'a command prefix such as "srun --ntasks-per-node=1", '
                      'or "" (one node)')
        if self.nodes > 1 and not self.launcher.strip():
            raise bad("compute.launcher", self.launcher, f"a command that starts the launcher on each of the "
                      f"{self.nodes} nodes (compute.nodes) such as \"srun --ntasks-per-node=1\"")
        check_str("compute.rdzv_endpoint", self.rdzv_endpoint, optional=True)
        check_int("compute.micro_batch", self.micro_batch, 0)
        check_int("compute.num_workers", self.num_workers, 0)
        for name in ("gradient_checkpointing", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise bad(f"compute.{name}", getattr(self, name), "true or false")
        check_int("compute.log_every", self.log_every, 1)
        check_int("compute.checkpoint_every", self.checkpoint_every, 0)

    def processes_per_node(self, gpus: int) -> int:
        """Workers per node on a node with ``gpus`` visible GPUs: the number given, or auto = one per GPU (1 without
        one)."""
        return max(1, gpus) if self.processes == AUTO else int(self.processes)

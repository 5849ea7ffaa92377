"""One worker per GPU from a plain ``dvc repro``: the stages that train, encode or generate start their own workers.

A stage script run by DVC (``python stages/train.py ...``) is one process. When the ``compute`` section asks for
more than one worker (``compute.processes: auto`` = one per visible GPU; ``compute.nodes`` > 1), the script starts
PyTorch's own launcher, ``python -m torch.distributed.run``, on itself with the same arguments and waits for it; the
workers (torchrun sets ``LOCAL_RANK``) do the work and the launching process exits with their status. Multi-node:
``compute.launcher`` (e.g. ``srun --ntasks-per-node=1``) starts that launcher once on every node, with a c10d
rendezvous at ``compute.rdzv_endpoint`` (default: this host). No collectives are written here: the workers use
accelerate / torch.distributed as usual. (``compute`` is the typed section, :class:`taxadiffusion.config.ComputeConfig`;
core imports no config.)

The ``compute`` section is listed under no stage's ``params`` in ``dvc.yaml``: how many workers ran never changes a
hash (training draws per sample, not per rank: :mod:`taxadiffusion.training.batches`).

Every node must see the workspace at the same path (a shared filesystem): the launching process writes a token file
into the workspace and every worker checks it sees that file with that content before any work, else it stops with
one line naming the host and the path.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch

from taxadiffusion.core.errors import UserError

log = logging.getLogger(__name__)

TOKEN_ENV = "TAXADIFFUSION_WORKSPACE_TOKEN"  # "<absolute path>=<token>": what every worker must see
TOKEN_DIR = Path("scratch") / "launch"
DEFAULT_PORT = 29500


def is_worker() -> bool:
    """Started by a distributed launcher (torchrun, accelerate launch, srun + torchrun): do the work here."""
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def is_main_worker() -> bool:
    """The worker that writes what all workers share (rank 0; a process started alone is it)."""
    return os.environ.get("RANK", "0") == "0"


def processes_per_node(compute) -> int:
    """``compute.processes`` (:class:`taxadiffusion.config.ComputeConfig`) on this node: a number, or auto = one per
    visible GPU (``CUDA_VISIBLE_DEVICES``), 1 without one."""
    return compute.processes_per_node(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def launch_command(compute, argv: list[str], token: str) -> list[str]:
    """The command that runs ``argv`` (a stage script and its arguments) as workers: torchrun, under
    ``compute.launcher`` on several nodes."""
    per_node = processes_per_node(compute)
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={per_node}"]
    if compute.nodes == 1:
        run.append("--standalone")  # a local rendezvous on a free port: several stages may run at once
    else:
        endpoint = compute.rdzv_endpoint or f"{socket.getfqdn()}:{DEFAULT_PORT}"
        run += [f"--nnodes={compute.nodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                f"--rdzv_id={token}"]
    return shlex.split(compute.launcher) + run + argv


def check_shared_workspace() -> None:
    """In a worker: the launching process's token file is visible here, with its content (module docstring)."""
    value = os.environ.get(TOKEN_ENV)
    if not value:
        return
    path, _, token = value.rpartition("=")
    try:
        seen = Path(path).read_text()
    except OSError:
        seen = None
    if seen != token:
        rank = os.environ.get("RANK", "?")
        raise UserError(f"worker {rank} on {socket.gethostname()}: {path} (written by the launching node into the "
                        f"workspace) is {'missing' if seen is None else 'another file'} here: every node must see the "
                        "workspace at the same path on a shared filesystem (README \"Scale out\")")


def run_as_workers(compute, argv: list[str]) -> int | None:
    """Start ``argv`` as the workers ``compute`` (the ``compute`` section) asks for and return their exit status;
    None when this process should do the work itself (it is a worker already, or one worker is all it asks for)."""
    if is_worker():
        check_shared_workspace()
        return None
    per_node = processes_per_node(compute)
    if per_node * compute.nodes == 1:
        return None
    token = secrets.token_hex(8)
    token_file = (TOKEN_DIR / f"{token}.txt").resolve()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token)
    env = {**os.environ, TOKEN_ENV: f"{token_file}={token}"}
    # torchrun sets 1 thread per worker (and says so on every start) unless told: the node's cores, shared out
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // per_node)))
    cmd = launch_command(compute, argv, token)
    log.info("%s: %d worker(s) on each of %d node(s) (compute.processes=%s, compute.nodes=%d)",
             Path(argv[0]).name, per_node, compute.nodes, compute.processes, compute.nodes)
    try:
        proc = subprocess.Popen(cmd, env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the workers got the Ctrl-C too and say where they stopped (cli.py)
            proc.wait()
            return 130
    except FileNotFoundError as exc:  # compute.launcher names a program that is not here
        raise UserError(f"params.yaml compute.launcher={compute.launcher!r}: {exc.filename}: no such program") from None
    finally:
        token_file.unlink(missing_ok=True)

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

Errors stay one line: torchrun runs inside ``python -m taxadiffusion.core.launch`` (:func:`torchrun`), which keeps its
failure report (a traceback and a table per rank) to itself; a worker's one-line error goes to a file next to the
token (``cli.one_line_errors``) and the launching process prints each distinct line once, not once per worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from taxadiffusion.core.errors import UserError

log = logging.getLogger(__name__)

TOKEN_ENV = "TAXADIFFUSION_WORKSPACE_TOKEN"  # "<absolute path>=<token>": what every worker must see
TOKEN_DIR = Path("scratch") / "launch"  # <token>/workspace (the token), <token>/rank-<r>.txt (a worker's error)
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
    import torch  # only where workers are counted: cli imports this module for every stage and tool

    return compute.processes_per_node(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def launch_command(compute, argv: list[str], token: str) -> list[str]:
    """The command that runs ``argv`` (a stage script and its arguments) as workers: torchrun, under
    ``compute.launcher`` on several nodes."""
    per_node = processes_per_node(compute)
    run = [sys.executable, "-m", "taxadiffusion.core.launch", f"--nproc_per_node={per_node}"]
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
    folder = (TOKEN_DIR / token).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workspace").write_text(token)
    env = {**os.environ, TOKEN_ENV: f"{folder / 'workspace'}={token}"}
    # torchrun sets 1 thread per worker (and says so on every start) unless told: the node's cores, shared out
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // per_node)))
    cmd = launch_command(compute, argv, token)
    log.info("%s: %d worker(s) on each of %d node(s) (compute.processes=%s, compute.nodes=%d)",
             Path(argv[0]).name, per_node, compute.nodes, compute.processes, compute.nodes)
    try:
        status = _wait(cmd, env, compute)
        errors = sorted(folder.glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
        for line in dict.fromkeys(p.read_text() for p in errors):  # each distinct line once, in rank order
            print(f"error: {line}", file=sys.stderr)
        return status
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait(cmd: list[str], env: dict, compute) -> int:
    try:
        proc = subprocess.Popen(cmd, env=env)
    except FileNotFoundError as exc:  # compute.launcher names a program that is not here
        raise UserError(f"params.yaml compute.launcher={compute.launcher!r}: {exc.filename}: no such program") from None
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the workers got the Ctrl-C too and say where they stopped (cli.py)
        proc.wait()
        return 130


def report_error(message: str) -> bool:
    """In a worker: leave ``message`` for the launching process to print (once for all workers); False when it
    cannot (not a worker, or the workspace is not shared): the caller prints it."""
    value = os.environ.get(TOKEN_ENV)
    if not value or not is_worker():
        return False
    path = Path(value.rpartition("=")[0]).parent / f"rank-{os.environ.get('RANK', '0')}.txt"
    try:
        if not path.parent.is_dir():
            return False
        path.write_text(message)
    except OSError:
        return False
    return True


def torchrun(argv: list[str]) -> None:
    """``python -m torch.distributed.run`` with ``argv``, its failure report left out: the workers' one-line errors
    are what the person reads (module docstring); exits with the first failed worker's status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # "failed (exitcode: 2) ..."
    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        sys.exit(failure.exitcode if failure.exitcode > 0 else 1)
    except (KeyboardInterrupt, SignalException):  # Ctrl-C: rank 0 said where it stopped
        sys.exit(130)


if __name__ == "__main__":
    torchrun(sys.argv[1:])

"""The params a stage reads, as ``dvc.yaml`` lists them, and a check that they did not change while it ran.

DVC records a stage's params in ``dvc.lock`` from ``params.yaml`` *after* the command exits 0. A stage reads
its params when it starts; if someone edits one of them while it runs (``probe.steps`` 50 -> 400 during a
``dvc repro``), the lock would record 400 for outputs made with 50 and ``dvc status`` would call them up to date.
So the stage runner (``cli.run_stage``) snapshots the stage's own params when it starts and compares them with the
file once the stage's work is done: a difference is a one-line error, and the non-zero exit keeps DVC from
recording the lock. Edits to other keys (preparing the next experiment) are not the stage's business.

Which keys: the ``params:`` of the stage(s) in ``dvc.yaml`` whose ``cmd`` runs this script (a ``foreach`` stage's
``do`` template; a listed section such as ``train`` covers all its sub-keys). Under ``dvc repro`` the stage is
the one DVC names in ``$DVC_STAGE``. ``dvc.yaml`` is the one next to the params file (where DVC runs the stage),
else the one of the repository holding the stage script (a direct run on another params file).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxadiffusion.config.file import read_params_dict
from taxadiffusion.core.errors import UserError

MISSING = "(missing)"


def _commands(body: dict) -> list[str]:
    cmd = body.get("cmd", [])
    return [cmd] if isinstance(cmd, str) else [str(c) for c in cmd]


def _runs_script(body: dict, script: str) -> bool:
    """A token of the stage's ``cmd`` names the script file (``python stages/train.py ...``)."""
    return any(Path(token).name == script for cmd in _commands(body) for token in cmd.split())


def _listed_keys(body: dict, params_name: str) -> list[str]:
    """Dotted keys a stage lists for ``params.yaml`` (DVC's default params file) or for ``params_name``."""
    keys: list[str] = []
    for entry in body.get("params", []) or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):  # {other_file.yaml: [keys]}: only ours is read by the stage runner
            for file, listed in entry.items():
                if Path(str(file)).name == params_name:
                    keys += [str(k) for k in listed or []]
    return keys


def stage_keys(dvc_yaml: Path, script: str, params_name: str = "params.yaml",
               dvc_stage: str | None = None) -> tuple[list[str], list[str]]:
    """(stage names, their params keys) for the stage script named ``script`` (e.g. ``train.py``).

    ``dvc_stage`` (DVC's ``$DVC_STAGE``, e.g. ``train@class``) picks the stage exactly; otherwise every stage
    whose ``cmd`` runs the script counts (their keys together)."""
    stages = read_params_dict(dvc_yaml).get("stages") or {}
    bodies = {name: stage.get("do", stage) for name, stage in stages.items() if isinstance(stage, dict)}
    group = dvc_stage.rsplit(":", 1)[-1].split("@", 1)[0] if dvc_stage else None
    names = [group] if group in bodies else [name for name, body in bodies.items() if _runs_script(body, script)]
    keys: list[str] = []
    for name in names:
        keys += [k for k in _listed_keys(bodies[name], params_name) if k not in keys]
    return names, keys


def lookup(data: Any, key: str) -> Any:
    """The value at dotted ``key`` in the params mapping (``MISSING`` when absent)."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def first_difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """The first leaf under ``key`` whose value differs (``train`` -> ``train.steps``), or None."""
    if old == new and type(old) is type(new):  # 1 == 1.0 == True, but DVC records them differently
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for sub in [*old, *(k for k in new if k not in old)]:
            found = first_difference(f"{key}.{sub}", old.get(sub, MISSING), new.get(sub, MISSING))
            if found:
                return found
    return key, old, new


def _show(value: Any) -> str:
    return value if value is MISSING else repr(value) if isinstance(value, str) else str(value)


@dataclass
class ParamsWatch:
    """A stage's own param values when it started (``start``), compared with the file by ``check``."""

    path: Path
    stage: str
    values: dict[str, Any]

    @classmethod
    def start(cls, path: str | Path, data: dict, script: str | Path) -> ParamsWatch | None:
        """Snapshot the keys of the stage that runs ``script`` from ``data`` (the mapping the stage's params
        were built from, so the snapshot is what it uses); None when no ``dvc.yaml`` lists the script."""
        path, script = Path(path), Path(script)
        dvc_yaml = path.parent / "dvc.yaml"
        if not dvc_yaml.is_file():
            dvc_yaml = script.resolve().parent.parent / "dvc.yaml"
        if not dvc_yaml.is_file():
            return None
        dvc_stage = os.environ.get("DVC_STAGE") or None
        names, keys = stage_keys(dvc_yaml, script.name, path.name, dvc_stage)
        if not keys:
            return None
        stage = dvc_stage or "/".join(names)
        return cls(path, stage, {k: copy.deepcopy(lookup(data, k)) for k in keys})

    def check(self) -> None:
        """A one-line error when one of the stage's params differs in the file now."""
        try:
            data = read_params_dict(self.path)
        except UserError as exc:
            raise UserError(f"{self.path} changed while stage {self.stage} ran and cannot be read now ({exc}); "
                            "its outputs were made with the values it had when the stage started: re-run") from None
        for key, old in self.values.items():
            found = first_difference(key, old, lookup(data, key))
            if found:
                where, was, now = found
                raise UserError(f"{self.path} {where} changed while stage {self.stage} ran ({_show(was)} -> "
                                f"{_show(now)}); its outputs were made with {_show(was)}: re-run")

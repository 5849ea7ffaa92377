"""Stage `preflight`: every problem that can be known before anything runs, in one message, before any data stage.

The FishNet preset offline (the fixture CSV with placeholder images, a miniature SD1.5 in the diffusers layout as
``model.pretrained``, empty torch.hub and HF caches) stops at preflight with every missing backbone weight and the
wrong resolution together; the embedded default passes in seconds and writes the same stamp every time; weights
that are there (random weights in the real formats) pass; the data checks are prepare's own.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.backbones import write_random_alexnet, write_tiny_clip
from helpers.e2e import RUNNING, copy_checkout, e2e_env, git
from helpers.params import REPO, tiny_params, write_params
from helpers.sd15 import RESOLUTION, make_mini_sd15
from helpers.stages import run_stage
from PIL import Image

import taxadiffusion.preflight.plan as plan_module
from taxadiffusion.config import params_from_dict
from taxadiffusion.core.errors import UserError
from taxadiffusion.preflight.run import run_preflight
from taxadiffusion.preflight.weights import checkpoint_problem

FISHNET_CSV = REPO / "tests" / "fixtures" / "fishnet_sample.csv"


def _placeholder_images(root: Path) -> Path:
    """One small image per FishNet fixture row at ``<Folder>/<file name of image>`` (the reader's path rule)."""
    with open(FISHNET_CSV, newline="") as f:
        for row in csv.DictReader(f):
            path = root / row["Folder"] / row["image"].rsplit("/", 1)[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (90, 120, 200)).save(path, format="JPEG")
    return root


def _fishnet_workspace(work: Path, sd15: Path, images: Path | None = None) -> Path:
    """``cp presets/fishnet.yaml params.yaml`` with the two dataset paths and model.pretrained set, as README says."""
    text = (REPO / "presets" / "fishnet.yaml").read_text()
    images = _placeholder_images(images or work / "images")
    for old, new in (("/data/fishnet/anns/train.csv", str(FISHNET_CSV)), ("/data/fishnet/images", str(images)),
                     ("pretrained: stable-diffusion-v1-5/stable-diffusion-v1-5", f"pretrained: {sd15}")):
        assert old in text
        text = text.replace(old, new)
    (work / "params.yaml").write_text(text)
    return work


def _empty_caches(tmp_path: Path) -> dict:
    """No torch.hub or HF cache: what a fresh offline machine has."""
    return {"TORCH_HOME": str(tmp_path / "torch-home"), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def mini_sd15(tmp_path_factory) -> Path:
    return make_mini_sd15(tmp_path_factory.mktemp("sd15") / "mini-sd15")


def test_fishnet_preset_offline_reports_every_problem_in_one_message(tmp_path, mini_sd15):
    work = _fishnet_workspace(tmp_path, mini_sd15)
    start = time.perf_counter()
    proc = run_stage("preflight.py", cwd=work, check=False, env=_empty_caches(tmp_path))
    seconds = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index("error: "):]
    assert message.startswith("error: preflight: 4 problem(s)"), message
    assert "Traceback" not in proc.stderr and proc.stderr.count("error: ") == 1
    numbered = [line for line in message.splitlines()[1:] if line.strip()]
    # every backbone of the preset, each with the param to set, and the resolution: in one message, nothing first
    for i, (param, what) in enumerate([
            ("dataset.resolution=512", f"native resolution {RESOLUTION} px"),
            ("evaluate.inception_weights", "set evaluate.inception_weights=/path/to/weights-inception"),
            ("evaluate.lpips_weights", "set evaluate.lpips_weights=/path/to/vgg16"),
            ("evaluate.bioclip_model", "set evaluate.bioclip_model=local-dir:")], 1):
        assert numbered[i - 1].startswith(f"  {i}. {param}") and what in numbered[i - 1], numbered
    assert not (work / "data" / "preflight.json").exists()
    assert seconds < 60, f"preflight took {seconds:.0f} s"


@pytest.mark.slow  # two stage processes
def test_weights_that_are_there_pass_and_a_broken_file_is_named(tmp_path, mini_sd15):
    work = _fishnet_workspace(tmp_path, mini_sd15)
    alex = write_random_alexnet(tmp_path / "alexnet.pth")
    clip = write_tiny_clip(tmp_path / "clip")
    html = tmp_path / "inception.pth"
    html.write_text("<html>404 Not Found</html>")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["dataset"]["resolution"] = RESOLUTION
    params["evaluate"].update(backbones=["probe", "inception", "alex", "bioclip"], inception_weights=str(html),
                              lpips_net="alex", lpips_weights=str(alex), bioclip_model=f"local-dir:{clip}")
    write_params(work, params)
    proc = run_stage("preflight.py", cwd=work, check=False, env=_empty_caches(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n  ") == 1, proc.stderr[-2000:]  # one problem: the HTML page saved as weights
    assert f"1. evaluate.inception_weights: {html} is neither a torch checkpoint nor safetensors" in proc.stderr
    assert checkpoint_problem(alex, "p") is None
    assert checkpoint_problem(clip / "open_clip_model.safetensors", "p") is None

    (clip / "open_clip_model.safetensors").unlink()  # open_clip would go on with random weights: a problem here
    params["evaluate"].update(backbones=["probe", "bioclip"])
    write_params(work, params)
    proc = run_stage("preflight.py", cwd=work, check=False, env=_empty_caches(tmp_path))
    assert f"1. evaluate.bioclip_model: {clip} has open_clip_config.json but no weights file" in proc.stderr


def test_bioclip_in_the_hf_cache_is_found_offline(tmp_path, mini_sd15):
    """``hf-hub:imageomics/bioclip`` in the HF cache (the layout huggingface_hub writes) passes while offline."""
    work = _fishnet_workspace(tmp_path, mini_sd15)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["dataset"]["resolution"] = RESOLUTION
    params["evaluate"]["backbones"] = ["probe", "bioclip"]
    write_params(work, params)
    env = _empty_caches(tmp_path)
    repo = Path(env["HF_HOME"]) / "hub" / "models--imageomics--bioclip"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_tiny_clip(repo / "snapshots" / commit)
    run_stage("preflight.py", cwd=work, env=env)
    assert (work / "data" / "preflight.json").exists()


@pytest.mark.slow  # two stage processes
def test_embedded_default_passes_in_seconds_and_the_stamp_never_changes(tmp_path):
    params = tiny_params()
    write_params(tmp_path, params)
    stamps = []
    for _ in range(2):
        start = time.perf_counter()
        proc = run_stage("preflight.py", cwd=tmp_path)
        assert time.perf_counter() - start < 60
        stamps.append((tmp_path / "data" / "preflight.json").read_bytes())
    assert stamps[0] == stamps[1]
    text = stamps[0].decode()
    assert "free" not in text and "GB" not in text and "seconds" not in text  # printed, never in a hash
    assert "checks passed" in proc.stderr and "base " in proc.stderr and "32 px native" in proc.stderr


def _run_in_process(params: dict, tmp_path: Path) -> str:
    with pytest.raises(UserError) as exc:
        run_preflight(params_from_dict(params), tmp_path / "preflight.json", tmp_path)
    return str(exc.value)


def _table(tmp_path: Path, rows: list[str]) -> dict:
    """A ``table`` dataset of ``rows`` (CSV lines after the header), images written, on the tiny base."""
    images = tmp_path / "images"
    images.mkdir()
    lines = ["image,class,order,family,genus,species"] + rows
    for line in rows:
        Image.new("RGB", (32, 32)).save(images / line.split(",")[0])
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    params = tiny_params()
    params["dataset"].update(name="table", metadata=str(tmp_path / "table.csv"), images=str(images))
    return params


def test_levels_against_the_columns_and_a_class_without_test_image_join_the_message(tmp_path):
    rows = [f"{i}.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax" for i in range(4)]
    rows += ["9.png,Reptilia,Squamata,Viperidae,Vipera,Vipera berus"]  # one species with one image: no test image
    params = _table(tmp_path, rows)
    params["evaluate"]["backbones"] = ["probe", "inception"]
    params["evaluate"]["inception_weights"] = str(tmp_path / "nowhere.pth")
    message = _run_in_process(params, tmp_path)
    assert "2 problem(s)" in message and "1. evaluate.inception_weights" in message
    assert "2. " + str(tmp_path / "table.csv") + ": class 'Reptilia' has no test image" in message

    params["levels"] = {"class": {"parent": "base"}, "order": {"parent": "class"}, "subfamily": {"parent": "order"}}
    params["generate"]["target_level"] = params["figures"]["embedding_level"] = "subfamily"
    params["prepare"]["finest_required"] = "subfamily"
    message = _run_in_process(params, tmp_path)
    assert f"{tmp_path / 'table.csv'}: line 1 (header): missing required column(s) 'subfamily'" in message


def test_disk_estimate_that_does_not_fit_is_a_problem(tmp_path, monkeypatch):
    rows = [f"{i}.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax" for i in range(4)]
    params = _table(tmp_path, rows)
    params["generate"].update(images_per_species=1000)
    monkeypatch.setattr(plan_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    message = _run_in_process(params, tmp_path)
    # 4 images + 1000 generated (1 test species x 1000) at 32 px x 3 bytes, twice (DVC cache): 6.2 MB > 1 MB free
    assert "1. disk: the planned outputs need up to 6.2 MB" in message and "only 1.0 MB are free" in message



def test_a_global_batch_the_workers_cannot_share_is_a_problem(tmp_path):
    rows = [f"{i}.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax" for i in range(4)]
    params = _table(tmp_path, rows)
    params["train"]["batch_size"] = 30
    params["compute"]["processes"] = 4  # 30 samples cannot be shared by 4 workers: found now, not at train@
    message = _run_in_process(params, tmp_path)
    assert "1. train.batch_size=30: not divisible by the 4 training processes" in message, message

def _graph(dvc_yaml: dict) -> dict[str, set[str]]:
    """stage -> the stages whose outputs it depends on (foreach stages by their template)."""
    stages = {name: st.get("do", st) for name, st in dvc_yaml["stages"].items()}
    outs = {(o if isinstance(o, str) else next(iter(o))): name for name, st in stages.items()
            for o in st.get("outs", []) + st.get("metrics", [])}
    parents = {}
    for name, st in stages.items():
        deps = [d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])]
        parents[name] = {producer for d in deps for out, producer in outs.items()
                         if d == out or d.startswith(out + "/") or out.startswith(d + "/")}
    return parents


def test_preflight_is_the_first_stage_of_the_dag():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    parents = _graph(dvc_yaml)
    assert parents["preflight"] == set()
    for stage in ("synthesize", "images"):
        assert parents[stage] == {"preflight"} or "preflight" in parents[stage], parents[stage]
    ancestors = {}

    def up(name: str) -> set[str]:
        if name not in ancestors:
            ancestors[name] = set(parents[name]) | {a for p in parents[name] for a in up(p)}
        return ancestors[name]

    assert [name for name in parents if name != "preflight" and "preflight" not in up(name)] == []
    assert dvc_yaml["stages"]["preflight"].get("always_changed") is True


@pytest.mark.slow
def test_dvc_repro_of_the_fishnet_preset_offline_stops_at_preflight(tmp_path, mini_sd15):
    """The real `dvc repro` in a fresh copy of the repository: preflight is the only stage that runs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo)
    _fishnet_workspace(repo, mini_sd15, images=tmp_path / "images")  # the image root outside, as a user's is
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "fishnet preset", cwd=repo)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, capture_output=True, text=True,
                          env={**e2e_env(), **_empty_caches(tmp_path)}, timeout=600)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and RUNNING.findall(out) == ["preflight"], out[-3000:]
    assert "error: preflight: 4 problem(s)" in out and out.count("evaluate.") >= 3
    assert seconds < 60, f"dvc repro took {seconds:.0f} s to stop"
    assert not (repo / "data").exists(), "a stage after preflight wrote something"

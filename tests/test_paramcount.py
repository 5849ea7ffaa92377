"""Table S1 parameter counts (method.md §1.4) from the real SD1.5 architecture built on ``meta``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taxadiffusion.core.errors import UserError
from taxadiffusion.tools import paramcount

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets" / "sd15"

# Exact figures (method.md §1.4 [ARITH]; paper Table S1 rounds them to 2 decimals in millions).
UNET = 859_520_964
LORA = 797_184
CONDITIONER_5 = 55_139_840
TAXA_TOTAL = 915_457_988
TAXA_TRAINABLE = 55_937_024
# Well-known sizes of SD1.5's frozen parts; they pin the text-encoder and VAE configs kept in assets/.
CLIP_L_TEXT = 123_060_480
SD_VAE = 83_653_863


def _check_table_s1(result: dict) -> None:
    m = result["models"]
    assert (m["SD"]["total"], m["SD"]["trainable"]) == (UNET, 0)
    assert (m["SD+LoRA"]["total"], m["SD+LoRA"]["trainable"]) == (UNET + LORA, LORA)
    assert (m["SD+Full FT"]["total"], m["SD+Full FT"]["trainable"]) == (UNET, UNET)
    assert (m["TaxaDiffusion"]["total"], m["TaxaDiffusion"]["trainable"]) == (TAXA_TOTAL, TAXA_TRAINABLE)
    b = result["breakdown"]
    assert (b["unet"], b["lora"], b["lora_layers"], b["conditioner"]) == (UNET, LORA, 128, CONDITIONER_5)
    # The paper's printed figures are within its 2-decimal rounding of ours.
    for row in m.values():
        assert paramcount.paper_agrees(row["total"], row["paper_total_m"])
        assert paramcount.paper_agrees(row["trainable"], row["paper_trainable_m"])


@pytest.mark.slow
def test_command_json_matches_table_s1(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # Run from another folder: the assets must be found next to the package, not in the cwd.
    proc = subprocess.run(
        [sys.executable, "-m", "taxadiffusion", "paramcount", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    _check_table_s1(result)
    assert result["levels"] == 5 and result["level_names"] == ["class", "order", "family", "genus", "species"]
    assert result["unet_config"] == "assets/sd15/unet/config.json"
    assert result["frozen_not_counted"] == {"text_encoder": CLIP_L_TEXT, "vae": SD_VAE}


def test_function_matches_table_s1():
    _check_table_s1(paramcount.count_parameters(levels=5))


def test_encoder_layer_matches_pytorch_shapes():
    # docs/method.md §1.4: in_proj 768*2304+2304, out_proj 768^2+768, FFN 768*2048+2048 + 2048*768+768, 2 LayerNorms.
    layer = 768 * 2304 + 2304 + 768 * 768 + 768 + 768 * 2048 + 2048 + 2048 * 768 + 768 + 2 * 1536
    b = paramcount.count_parameters(levels=5)["breakdown"]
    assert b["per_encoder_layer"] == layer == 5_513_984
    assert b["per_level"] == 2 * layer and b["conditioner"] == 5 * 2 * layer


def test_seven_levels_has_no_paper_row():
    result = paramcount.count_parameters(levels=7)
    taxa = result["models"]["TaxaDiffusion"]
    # docs/method.md §1.4: a 7-level (iNat) model would have 77.99M "trainable".
    assert taxa["trainable"] == LORA + 7 * 11_027_968 == 77_992_960
    assert taxa["total"] == UNET + LORA + 7 * 11_027_968
    assert taxa["paper_total_m"] is None and taxa["paper_trainable_m"] is None
    assert result["level_names"][0] == "kingdom"
    assert result["models"]["SD+LoRA"]["paper_trainable_m"] == 0.80  # SD rows still compared


def test_table_output(capsys):
    paramcount.main([])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("SD", "TaxaDiffusion"))}
    assert set(rows) == {"SD", "SD+LoRA", "SD+Full", "TaxaDiffusion"}
    assert "915,457,988" in rows["TaxaDiffusion"] and "55,937,024" in rows["TaxaDiffusion"]
    assert "915.45 M" in rows["TaxaDiffusion"] and "55.93 M" in rows["TaxaDiffusion"]  # paper's figures
    assert all(line.rstrip().endswith("yes") for line in rows.values())


def test_paper_agrees_rejects_a_wrong_count():
    assert paramcount.paper_agrees(TAXA_TRAINABLE, 55.93)
    assert not paramcount.paper_agrees(TAXA_TRAINABLE - 11_027_968, 55.93)  # one level missing


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--levels", "0"], "--levels must be at least 1"),
        (["--unet-config", "/no/such/unet"], "/no/such/unet: UNet config not found"),
        (["--unet-config", str(ASSETS / "vae")], "field _class_name is 'AutoencoderKL'"),
    ],
)
def test_bad_input_is_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        paramcount.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_bad_unet_config_names_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match=r"broken\.json: not valid JSON"):
        paramcount.unet_counts(broken)
    config = json.loads((ASSETS / "unet" / "config.json").read_text())
    config["up_block_types"] = config["up_block_types"][:3]  # diffusers rejects mismatched block lists
    bad = tmp_path / "unet" / "config.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config\.json: cannot build UNet2DConditionModel"):
        paramcount.unet_counts(bad.parent)


def test_assets_are_the_sd15_configs():
    from diffusers import PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    unet = UNet2DConditionModel.load_config(str(ASSETS / "unet"))
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 768
    assert unet["sample_size"] == 64 and unet["in_channels"] == unet["out_channels"] == 4
    text = CLIPTextConfig.from_pretrained(str(ASSETS / "text_encoder"))
    assert (text.hidden_size, text.num_hidden_layers, text.max_position_embeddings, text.vocab_size) == \
        (768, 12, 77, 49408)
    assert text.hidden_act == "quick_gelu"
    vae = json.loads((ASSETS / "vae" / "config.json").read_text())
    assert vae["latent_channels"] == 4 and vae["scaling_factor"] == 0.18215
    sched = PNDMScheduler.from_pretrained(str(ASSETS / "scheduler"))
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.skip_prk_steps
    assert sched.config.steps_offset == 1 and not sched.config.set_alpha_to_one
    assert (sched.config.beta_start, sched.config.beta_end) == (0.00085, 0.012)
    # No weights are kept in the repo: configs only.
    assert not [p for p in ASSETS.rglob("*") if p.suffix in {".safetensors", ".bin", ".ckpt", ".pt"}]

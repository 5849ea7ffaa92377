"""BioCLIP score with a tiny random open_clip model saved to disk and loaded through open_clip's
``local-dir:`` loader (no mocks), the lineage prompt, and the offline error for the hub model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

import open_clip  # noqa: E402
from helpers.backbones import write_tiny_clip  # noqa: E402

from taxadiffusion.core.errors import UserError  # noqa: E402
from taxadiffusion.metrics.bioclip import BioCLIPScorer, lineage_prompt  # noqa: E402

LEVELS = ["class", "order", "family", "genus", "species"]


def test_lineage_prompt():
    lineage = ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax")
    assert lineage_prompt("{lineage}", lineage, LEVELS) == "Aves Passeriformes Corvidae Corvus corax"
    assert lineage_prompt("a photo of {lineage}.", lineage[:2], LEVELS) == "a photo of Aves Passeriformes."
    assert lineage_prompt("{genus} / {species}", lineage, LEVELS) == "Corvus / Corvus corax"
    with pytest.raises(UserError, match=r"evaluate.bioclip_template: '\{kingdom\}' cannot be filled"):
        lineage_prompt("{kingdom}", lineage, LEVELS)


def test_prompt_stops_at_the_drawn_level():
    """generate.target_level coarser than the finest level: the levels below it are "None" in the manifest; the
    prompt names the drawn taxon and stops there (no trailing "None" words, no "None" level fields)."""
    genus = ("Aves", "Passeriformes", "Corvidae", "Corvus", "None")
    order = ("Aves", "Passeriformes", "None", "None", "None")
    assert lineage_prompt("{lineage}", genus, LEVELS) == "Aves Passeriformes Corvidae Corvus"
    assert lineage_prompt("a photo of {lineage}.", order, LEVELS) == "a photo of Aves Passeriformes."
    assert lineage_prompt("{order}|{family}|{species}", order, LEVELS) == "Passeriformes||"
    # a gap (an empty rank above the drawn one) is skipped, as before
    assert lineage_prompt("{lineage}", ("Aves", "", "Corvidae", "None", "None"), LEVELS) == "Aves Corvidae"


def test_score_is_100_cos_with_the_lineage_text(tmp_path):
    folder = write_tiny_clip(tmp_path / "tiny-bioclip")
    scorer = BioCLIPScorer(f"local-dir:{folder}", "a photo of {lineage}.", LEVELS)
    assert scorer.name == "bioclip-v1" and scorer.info["model"] == f"local-dir:{folder}"
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    lineages = [("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax")] * 2 + [
        ("Reptilia", "Squamata", "Boidae", "Boa", "Boa constrictor")
    ]
    scores = scorer.scores(scorer.image_embeddings(images, batch_size=2), lineages)

    # The same numbers from an independently loaded copy, computed by hand.
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in images]))
        txt = model.encode_text(tokenizer(["a photo of Aves Passeriformes Corvidae Corvus corax.",
                                           "a photo of Reptilia Squamata Boidae Boa constrictor."]))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    expected = 100 * torch.stack([img[0] @ txt[0], img[1] @ txt[0], img[2] @ txt[1]])
    assert scores == pytest.approx(expected.double().numpy(), abs=1e-3)
    assert np.all(np.abs(scores) <= 100)
    # Level-wise: the prompt cut at the class level gives different numbers.
    assert not np.allclose(scorer.scores(scorer.image_embeddings(images), lineages, depth=1), scores)


def test_missing_bioclip_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        BioCLIPScorer("hf-hub:imageomics/bioclip", "{lineage}", LEVELS)
    msg = str(err.value)
    assert msg.startswith("evaluate.bioclip_model: cannot load BioCLIP 'hf-hub:imageomics/bioclip'") and "\n" not in msg
    assert "set evaluate.bioclip_model=local-dir:/path/to/bioclip" in msg
    with pytest.raises(UserError, match=r"has no open_clip_config.json"):
        BioCLIPScorer(f"local-dir:{tmp_path}", "{lineage}", LEVELS)
    with pytest.raises(UserError, match=r"evaluate.bioclip_model: '/nope' not found"):
        BioCLIPScorer("/nope", "{lineage}", LEVELS)

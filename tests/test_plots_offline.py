"""`dvc plots show` readable offline: DVC's page loads Vega from a CDN, so .dvc/config points it at
assets/plots/offline_template.html, which inlines the three libraries (assets/plots/make_template.py)."""

from __future__ import annotations

import configparser
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.browser import run_chromium

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "assets" / "plots" / "offline_template.html"


def test_the_repository_renders_plots_with_the_offline_template():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE  # relative to .dvc/ (DVC's rule)
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # no CDN script tags are filled in
    assert not re.search(r"<script[^>]*\bsrc=", page), "the template must not load scripts from anywhere"
    blocks = re.findall(r"<script>/\* ([\w-]+@[\d.]+) \*/\n(.*?)\n    </script>", page, flags=re.S)
    assert [name for name, _ in blocks] == ["vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"]
    for name, code in blocks:  # the provenance comment names what was inlined
        assert f"{name} sha256:{hashlib.sha256(code.encode()).hexdigest()}" in page, name


@pytest.mark.slow
def test_dvc_plots_show_draws_a_curve_in_chromium_without_network(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "curve.csv").write_text("step,loss\n1,0.50\n2,0.30\n3,0.25\n")
    (repo / "dvc.yaml").write_text("plots:\n  - curve.csv:\n      x: step\n      y: loss\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "config", "plots.html_template", str(TEMPLATE)], cwd=repo, check=True)
    subprocess.run([*dvc, "plots", "show", "-o", "plots"], cwd=repo, check=True, capture_output=True)
    page = repo / "plots" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text()
    proc = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    # vega-embed draws into a <canvas class="marks"> inside the plot's div; a failed load leaves the div empty
    assert re.search(r'<div id="curve_csv"[^>]*>.*?<canvas[^>]*class="marks"', proc.stdout, flags=re.S), \
        proc.stdout[-2000:]
    # Vega itself logs version notes and an empty hover layer's extent (online too); a missing library is an error
    errors = [line for line in proc.stderr.splitlines()
              if "CONSOLE" in line and re.search(r"Error|not defined|Failed|ERR_", line)]
    assert not errors, errors

"""The report in a real browser: headless Chromium loads every image, finds every section, logs nothing.

The report has no scripts of its own; the test opens a copy with one inline checking script added at the
top of ``<head>`` (it records load errors of any element from the start, then, on ``load``, writes every
image's ``naturalWidth`` and every section id into the DOM), and reads them back from
``chromium --headless --dump-dom``. Console messages appear on Chromium's stderr (``--enable-logging=stderr``)
as ``CONSOLE`` lines; the page must produce none. Without Chromium (Debian: ``apt-get install chromium``;
``CHROMIUM=/path`` picks another binary) it skips, saying why, except under CI (``CI=true``, as ``.ci/run``
sets it after installing Chromium), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.browser import run_chromium
from helpers.report import full_report

from taxadiffusion.report.build import SECTIONS, section_titles

CHECK = """<script>
window.__errors = [];
window.addEventListener('error',
  e => window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.tagName)))), true);
window.addEventListener('load', () => {
  const out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
    headings: [...document.querySelectorAll('section > h2')].map(h => h.textContent),
    errors: window.__errors,
  });
  document.body.appendChild(out);
});
</script>"""


def open_in_browser(page: Path, tmp: Path) -> tuple[dict, str]:
    """``(results of the checking script, Chromium's stderr)`` for ``page``."""
    html = page.read_text()
    checked = page.with_name("browser-check.html")
    checked.write_text(html.replace("<head>", "<head>" + CHECK, 1))
    proc = run_chromium(tmp, "--dump-dom", checked.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, f"the checking script did not run; stderr:\n{proc.stderr[-3000:]}"
    text = found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text), proc.stderr


@pytest.mark.slow
def test_report_opens_in_chromium(tmp_path):
    page = full_report(tmp_path)
    result, stderr = open_in_browser(page, tmp_path)
    assert result["sections"] == [sid for sid, _ in SECTIONS]
    assert result["headings"] == [title for _, title in section_titles()]
    assert len(result["images"]) == len(re.findall(r"<img ", page.read_text())) > 0
    broken = [i for i in result["images"] if not i["complete"] or i["width"] <= 0]
    assert not broken, broken
    assert result["errors"] == []
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console

"""Writes ``offline_template.html``: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined, so
``dvc plots show`` renders with no network (DVC's own page loads them from a CDN).

The libraries are the npm packages at the versions dvc-render 1.0 pins in its page (vega 5.20.2, vega-lite 5.2.0,
vega-embed 6.18.2), taken from the npm registry:

    cd /tmp && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python assets/plots/make_template.py /tmp/vega-5.20.2.tgz /tmp/vega-lite-5.2.0.tgz /tmp/vega-embed-6.18.2.tgz

``.dvc/config`` (``plots.html_template``) points DVC at the result; tests/test_plots_offline.py checks it in
headless Chromium with the network cut off. The packages' licences (BSD-3-Clause) are in LICENSES.md.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "offline_template.html"
# package -> the minified browser build inside its npm tarball
BUILDS = {"vega": "package/build/vega.min.js", "vega-lite": "package/build/vega-lite.min.js",
          "vega-embed": "package/build/vega-embed.min.js"}
# DVC's page (dvc_render.html.PAGE_HTML) with the CDN `{scripts}` replaced by the inlined libraries
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <!-- {provenance} -->
{inlined}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(tarballs: list[str]) -> None:
    scripts, provenance = [], []
    for tarball in tarballs:
        name, _, version = Path(tarball).name.removesuffix(".tgz").rpartition("-")
        with tarfile.open(tarball) as tar:
            code = tar.extractfile(BUILDS[name]).read().decode("utf-8")
        # the page is filled by str.replace of "{plot_divs}" etc.: a library must not contain those words
        assert "{plot_divs}" not in code and "{refresh_tag}" not in code and "</script" not in code.lower()
        scripts.append(f"    <script>/* {name}@{version} */\n{code}\n    </script>")
        provenance.append(f"{name}@{version} sha256:{hashlib.sha256(code.encode()).hexdigest()}")
    OUT.write_text(PAGE.format(provenance="; ".join(provenance), inlined="\n".join(scripts)))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes): {'; '.join(provenance)}")


if __name__ == "__main__":
    main(sys.argv[1:])

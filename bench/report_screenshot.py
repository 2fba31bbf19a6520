"""The README's report figure: run a bundle on its validation split and screenshot report.html.

    python bench/report_screenshot.py [--model captcha_v2] [--png bench/results/report_captcha_v2.png]

Links the bundle's validation files (listed in its manifest) into a temporary folder, runs
``python -m pipeline.run --mode both`` on them, and renders the resulting report.html in headless
Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.bundle import load_bundle  # noqa: E402
from pipeline.report_html import screenshot  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="captcha_v2")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="also keep the run's OUT folder here")
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    source = ROOT / bundle.manifest["data"]["folder"]
    png = args.png or ROOT / "bench" / "results" / f"report_{bundle.name}.png"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "validation"
        folder.mkdir()
        for rel in bundle.manifest["data"]["validation_files"]:
            (folder / rel).symlink_to((source / rel).resolve())
        out = args.keep or Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "pipeline.run", str(folder), "--out", str(out), "--model",
                        bundle.name, "--mode", "both", "-q"], check=True, cwd=ROOT)
        screenshot(out / "report.html", png)
    print(f"screenshot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

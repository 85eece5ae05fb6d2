"""Screenshots of the dashboard's Prompt and Steering pages, as in docs/images/ (headless Chromium):

    python -m reasoning_dspy.dashboard.screenshot --out docs/images      # smollm2-reasoner, its shipped SAE

It starts the dashboard in this process, enters one prompt on each page (the Steering page with the
SAE's recommended steering and a strength sweep), and writes `dashboard-prompt.png` and
`dashboard-steering.png` atomically.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from reasoning_dspy._io import atomic_write_bytes

PROMPT = "Tom has 3 boxes of 12 pencils. He gives away 9 pencils. How many pencils does he have left?"


def _shoot(page, out: Path) -> None:
    """The whole page as a 256-colour PNG (a third of the size; UI colours survive)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    buf = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    atomic_write_bytes(out, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-reasoner")
    parser.add_argument("--sae", default=None)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sweep", default="0, 0.05, 0.1, 0.15, 0.2", help="strengths of the sweep")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()

    from reasoning_dspy.dashboard.browser import chromium
    from reasoning_dspy.dashboard.config import DashboardConfig
    from reasoning_dspy.dashboard.launch import start

    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as tmp:
        cfg = DashboardConfig(model=args.model, sae=args.sae, port=0, max_tokens=args.max_tokens, user="analyst",
                              cache_dir=args.cache_dir, database_url=f"sqlite:///{tmp}/tracking.sqlite")
        running = start(cfg)
        try:
            with chromium(width=1280, height=900) as page:
                page.set_default_timeout(600_000)
                page.goto(running.url)
                page.wait_for_selector("#rd-prompt textarea")
                page.fill("#rd-prompt textarea", args.prompt)
                page.click("#rd-generate")
                page.wait_for_selector("#rd-heatmap .rd-tok")
                _shoot(page, args.out / "dashboard-prompt.png")
                page.get_by_role("tab", name="Steering").click()
                page.fill("#rd-steer-prompt textarea", args.prompt)
                page.click("#rd-steer")
                page.wait_for_function("document.querySelector('#rd-steered textarea')?.value.length > 0")
                page.fill("#rd-strengths textarea, #rd-strengths input", args.sweep)
                page.click("#rd-sweep")
                page.wait_for_function("document.querySelector('#rd-steer-status')?.innerText.includes('swept')")
                page.wait_for_timeout(1000)  # the sweep's table renders after its plot
                _shoot(page, args.out / "dashboard-steering.png")
        finally:
            running.close()
    print(f"wrote {args.out / 'dashboard-prompt.png'} and {args.out / 'dashboard-steering.png'}")


if __name__ == "__main__":
    main()

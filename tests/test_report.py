"""`snakemake --report` of the tiny workflow, opened in a real browser (headless Chromium): every
report() item is there and shows its caption from report/*.rst.

    .venv/bin/python -m pytest -m slow tests/test_report.py      (a whole tiny workflow run: 12 min on 2 busy cores)
"""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from test_workflow import ROOT, run_snakemake, tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# every report() output of the workflow and its caption file
ITEMS = {
    "results/data/cohort_counts.csv": "cohort_counts.rst",
    "results/figures/contact_sheet.png": "contact_sheet.rst",
    "results/table1.tex": "table1.rst",
    "results/table_progression.tex": "progression.rst",
    "results/figures/progression.png": "progression.rst",
    "results/figures/figure2.png": "figure2.rst",
    "results/figures/figure3.png": "figure3.rst",
    "results/figures/figure5.png": "figure5.rst",
    "results/figures/samples.png": "samples.rst",
}
CATEGORIES = ("Data", "Table 1", "Progression", "Figures")

# Appended to a copy of the report: once the React app is up, open every result in turn, as a click
# on it would, and keep the text the page then shows (innerText: what is rendered, not the scripts).
OPEN_EVERY_RESULT = """<script>
setTimeout(() => {
  const shown = {"": document.querySelector("#app").innerText};
  const paths = Object.keys(results);
  let i = 0;
  const step = () => {
    if (i > 0) shown[paths[i - 1]] = document.querySelector("#app").innerText;
    if (i === paths.length) {
      const pre = document.createElement("pre");
      pre.id = "shown";
      pre.textContent = JSON.stringify(shown);
      document.body.appendChild(pre);
      return;
    }
    app.showResultInfo(paths[i++]);
    setTimeout(step, 300);
  };
  step();
}, 1000);
</script>
"""


class Shown(HTMLParser):
    """The text of <pre id="shown"> in the dumped DOM."""

    def __init__(self):
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag, attrs):
        self.inside = self.inside or (tag == "pre" and ("id", "shown") in attrs)

    def handle_endtag(self, tag):
        if tag == "pre":
            self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.text += data


def words(text: str) -> str:
    return " ".join(re.sub(r"[‘’]", "'", text).split())


def render(report: Path, tmp_path: Path) -> dict:
    page = tmp_path / "report_opened.html"
    page.write_text(report.read_text() + OPEN_EVERY_RESULT)
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                           "--window-size=1400,1000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    parser = Shown()
    parser.feed(done.stdout)
    assert parser.text, "the report's app did not render in Chromium: " + done.stdout[:2000]
    return {path: words(text) for path, text in json.loads(parser.text).items()}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH (Debian: apt-get install chromium)")
def test_report_shows_every_result_with_its_caption(tmp_path):
    tiny_config(tmp_path)
    out = run_snakemake(tmp_path, "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_snakemake(tmp_path, "--cores", "1", "--report", "results/report.html")
    assert out.returncode == 0, out.stderr[-3000:]
    shown = render(tmp_path / "results/report.html", tmp_path)

    assert all(category in shown[""] for category in CATEGORIES), shown[""]
    missing = sorted(set(ITEMS) - set(shown))
    assert not missing, f"not in the report: {missing}"
    for path, caption in ITEMS.items():
        text = words((ROOT / "report" / caption).read_text())
        assert text in shown[path], f"{path}: caption {caption} not shown; the page shows: {shown[path][:1500]}"

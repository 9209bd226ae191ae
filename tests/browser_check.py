"""Open a report in headless Chromium and read back what the page shows (Chromium alone)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def chromium_available() -> bool:
    return CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is not None


CHECK_SCRIPT = """
<pre id="kdaudit-check"></pre>
<script>
window.addEventListener("load", function () {
  var v = document.getElementById("verdicts");
  var images = Array.prototype.map.call(document.images, function (im) {
    return [im.id, im.complete, im.naturalWidth];
  });
  var h1 = document.querySelector("h1"), walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  var first = null;
  while (h1 && walker.nextNode()) {
    var n = walker.currentNode;
    if (!h1.contains(n) && (h1.compareDocumentPosition(n) & Node.DOCUMENT_POSITION_FOLLOWING) && n.textContent.trim()) {
      first = n;
      break;
    }
  }
  var hl = document.getElementById("headline");
  var c = document.getElementById("copied");
  var count = function (sel) { return c ? c.querySelectorAll(sel).length : 0; };
  var copied = !c ? null : {
    heading: c.querySelector("h2") ? c.querySelector("h2").textContent : "",
    images: Array.prototype.map.call(c.querySelectorAll("img"), function (im) {
      return [im.id, im.complete, im.naturalWidth];
    }),
    table_rows: count("table tbody tr"),
    examples: count("figure.example"),
    example_images: count("figure.example img"),
    example_texts: Array.prototype.map.call(c.querySelectorAll("figure.example .snippet"), function (q) {
      return q.textContent;
    })
  };
  document.getElementById("kdaudit-check").textContent = JSON.stringify({
    verdicts_visible: !!v && v.offsetHeight > 0, images: images, copied: copied,
    headline_first: !!first && !!hl && hl.contains(first) && hl.offsetHeight > 0,
    tests_collapsed: Array.prototype.map.call(document.querySelectorAll("#tests details"), function (d) {
      return !d.open;
    })
  });
});
</script>
"""


def run_chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def check_in_browser(report_html: Path, tmp: Path) -> dict:
    """Load a copy of ``report_html`` with a load-time probe; return what it saw.

    ``{"verdicts_visible": bool, "images": [[id, complete, naturalWidth], ...], "copied": ...,
    "headline_first": bool, "tests_collapsed": [bool, ...]}``; ``headline_first``: the first text after
    the title is the visible headline; ``tests_collapsed``: per collapsible block of the tests section,
    whether it is closed;
    ``copied`` (None without a "What is copied" section) holds that section's heading, its images,
    the number of its table rows and examples, its example images and its example texts.
    """
    doc = report_html.read_text(encoding="utf-8")
    assert "</body>" in doc
    probe = tmp / "probe.html"
    probe.write_text(doc.replace("</body>", CHECK_SCRIPT + "</body>", 1), encoding="utf-8")
    res = run_chromium(["--dump-dom", probe.as_uri()], tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="kdaudit-check">(.*?)</pre>', res.stdout, flags=re.S)
    assert m and m.group(1).strip(), "the load check did not run"
    return json.loads(html.unescape(m.group(1)))

"""The stylesheet of the HTML reports (inlined into each ``<style>``; no external URLs)."""

__all__ = ["CSS"]

CSS = """
:root {
  --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; --card: #ffffff;
  --accent: #2f6fde; --head: #f3f4f6; --sig: #fff6dc;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
        "Liberation Sans", "DejaVu Sans", sans-serif;
}
main { max-width: 1180px; margin: 0 auto; padding: 36px 28px 56px; }
header.top h1 { font-size: 28px; line-height: 1.25; margin: 0 0 4px; letter-spacing: -0.01em; }
header.top p { margin: 0; color: var(--muted); }
header.top p.headline { margin: 10px 0 8px; color: var(--fg); font-size: 18px; line-height: 1.45; font-weight: 600;
                        max-width: 60em; }
nav#contents { margin-top: 14px; font-size: 13.5px; }
nav#contents ol { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav#contents a, figcaption a { color: var(--accent); text-decoration: none; }
nav#contents a:hover, figcaption a:hover { text-decoration: underline; }
p.code-caption { margin: 16px 0 4px; font-weight: 600; }
pre.code { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
           margin: 0 0 12px; }
h2 { font-size: 19px; margin: 0 0 14px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
section { margin-top: 38px; }
p.note { color: var(--muted); font-size: 13.5px; margin: 0 0 12px; }
#verdicts {
  margin-top: 24px; background: var(--card); border: 1px solid var(--line);
  border-top: 4px solid var(--accent); border-radius: 10px; padding: 20px 22px 22px;
  box-shadow: 0 1px 3px rgba(17, 24, 39, 0.06);
}
#verdicts h2 { border-bottom: none; padding-bottom: 0; margin-bottom: 12px; }
.verdict-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.verdict { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; background: #fbfbfc; }
.verdict h3 { margin: 0 0 10px; font-size: 16px; }
.badges { display: grid; grid-template-columns: 1fr auto; gap: 5px 12px; font-size: 13.5px;
          align-items: center; margin: 0; }
.badges dt { color: #374151; }
.badges dd { margin: 0; text-align: right; }
.verdict ul { margin: 12px 0 0; padding-left: 18px; font-size: 14px; }
.verdict li { margin: 3px 0; }
.badge { display: inline-block; min-width: 38px; text-align: center; padding: 1px 10px;
         border-radius: 999px; font-size: 12px; font-weight: 600; line-height: 1.6;
         border: 1px solid transparent; white-space: nowrap; }
.badge.yes { background: #dcfce7; color: #166534; border-color: #bbf7d0; }
.badge.no { background: #eef0f3; color: #374151; border-color: #e2e5ea; }
.badge.warn { background: #fde2e1; color: #9b1c1c; border-color: #fbcaca; }
.badge.nt { background: transparent; color: var(--muted); border: 1px dashed #c9ced6; }
.legend { margin-top: 14px; font-size: 12.5px; color: var(--muted); }
.legend .badge { margin: 0 3px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; margin: 0; }
.fact { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 9px 12px; }
.fact dt { font-size: 11.5px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
.fact dd { margin: 2px 0 0; font-weight: 600; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; }
th, td { padding: 6px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; color: #374151; vertical-align: bottom; }
tbody tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; }
td.num, td.nw, th.nw { white-space: nowrap; }
td.wide { min-width: 260px; }
tr.hl td { background: var(--sig); }
tr.hl td:first-child { box-shadow: inset 3px 0 0 #e0a100; }
.figures { display: grid; grid-template-columns: 1fr; gap: 18px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
figure h3 { margin: 0 0 8px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 8px; }
dl.read { margin: 0; }
dl.read dt { font-weight: 600; margin-top: 12px; }
dl.read dd { margin: 2px 0 0; }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
summary { cursor: pointer; font-weight: 600; }
details.tests { background: transparent; border: none; padding: 0; margin: 20px 0 0; }
details.tests > summary { font-size: 15px; margin-bottom: 8px; }
details.tests .count { font-weight: 400; color: var(--muted); font-size: 13px; margin-left: 6px; }
pre { font: 12.5px/1.5 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
      "DejaVu Sans Mono", monospace; white-space: pre-wrap; overflow-wrap: anywhere; margin: 10px 0 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
details.group { margin: 18px 0 0; }
details.group > summary { margin-bottom: 8px; }
details.group .count { font-weight: 400; color: var(--muted); font-size: 13px; margin-left: 6px; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
figure.example { padding: 10px; text-align: center; }
figure.example img.thumb { image-rendering: pixelated; max-width: 100%; }
figure.example .snippet { margin: 0; padding: 8px; background: var(--head); border-radius: 6px;
  font: 14px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
figure.example figcaption { font-size: 12.5px; margin-top: 6px; }
@media print {
  body { background: #fff; }
  #verdicts, figure, .table-wrap, .fact { box-shadow: none; break-inside: avoid; }
}
""".strip()

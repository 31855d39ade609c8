"""The one HTML page skeleton of bids_mdd's reports (participant and group): a self-contained
page with a shared style sheet."""

from __future__ import annotations

from html import escape

#: Style shared by every report; a report may add its own rules.
STYLE = """body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:left}.flag{color:#b00;font-weight:bold}
.warn{background:#fee;padding:.5em;border:1px solid #b00}
img{width:100%;border:1px solid #ddd;margin:.3em 0}"""


def page(title: str, body: str, extra_style: str = "") -> str:
    """A complete HTML document titled ``title`` (escaped) around ``body`` (HTML)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}{extra_style}</style></head><body>\n{body}\n</body></html>\n")

"""Real-looking HTML pages for web_fetch tests and benchmarks.

Each page has the parts a reader must keep (``MUST``: headings, paragraphs,
list items, table cells, code) and the parts it must drop (``NEVER``:
scripts, styles), wrapped in the navigation, footers and widgets of a
typical site, so text extractors can be compared on what they keep.
"""

from __future__ import annotations

from dataclasses import dataclass

NEVER = ("trackPageView", "color: #ff00ff", "window.__NUXT__")
# The site's navigation, widgets and footer: a good reader leaves them out too.
CHROME = ("Pricing", "Sign in", "Ten tips for tidy desks", "Advertisement: buy shoes", "All rights reserved")

_CHROME_TOP = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>body {{ color: #ff00ff; font-family: sans-serif }} .nav li {{ display: inline }}</style>
<script>window.dataLayer = []; function trackPageView() {{ dataLayer.push('pv') }} trackPageView();</script>
<script type="application/json">{{"window.__NUXT__": {{"state": "big"}}}}</script>
</head><body>
<header><a href="/">Home</a><ul class="nav"><li><a href="/blog">Blog</a></li><li><a href="/docs">Docs</a></li>
<li><a href="/pricing">Pricing</a></li><li><a href="/login">Sign in</a></li></ul>
<form><input name="q" placeholder="Search"></form></header>
"""
_CHROME_BOTTOM = """<aside><h3>Related posts</h3><ul><li><a href="/a">Ten tips for tidy desks</a></li>
<li><a href="/b">Why we moved offices</a></li></ul><div class="ad">Advertisement: buy shoes</div></aside>
<footer><p>&copy; 2025 Example Corp. All rights reserved.</p><a href="/privacy">Privacy</a>
<a href="/terms">Terms</a></footer><script>trackPageView('footer')</script></body></html>"""


@dataclass(frozen=True)
class Page:
    name: str
    html: str
    must: tuple[str, ...]


def article() -> Page:
    body = """<main><article><h1>Growing tomatoes on a balcony</h1>
<p class="byline">By Ada Gardener, 3 May 2025</p>
<p>Tomatoes need at least six hours of direct sun. A south-facing balcony is ideal,
but cherry varieties forgive a little shade.</p>
<h2>Choosing a pot</h2>
<p>Use a container of at least 20 litres with drainage holes; terracotta dries out faster
than plastic in July heat.</p>
<ul><li>Cherry tomatoes: 'Sungold', 'Gardener's Delight'</li><li>Bush types need no staking</li></ul>
<h2>Watering</h2><p>Water deeply in the morning, never the leaves. Blossom end rot means uneven watering.</p>
<blockquote>Feed weekly with a high-potash fertiliser once the first truss sets.</blockquote>
</article></main>"""
    must = (
        "Growing tomatoes on a balcony",
        "six hours of direct sun",
        "Choosing a pot",
        "20 litres",
        "Sungold",
        "Blossom end rot",
        "high-potash fertiliser",
    )
    return Page("article", _CHROME_TOP.format(title="Balcony tomatoes") + body + _CHROME_BOTTOM, must)


def docs() -> Page:
    body = """<div class="layout"><nav class="sidebar"><ul><li><a href="#">Install</a></li><li><a href="#">Config</a>
</li><li><a href="#">API</a></li></ul></nav><div class="content"><h1>Configuration reference</h1>
<p>Settings are read from <code>config.json</code> in the working directory.</p>
<table><thead><tr><th>Key</th><th>Default</th><th>Meaning</th></tr></thead><tbody>
<tr><td>port</td><td>8900</td><td>TCP port to listen on</td></tr>
<tr><td>timeout</td><td>120</td><td>Seconds before a request is abandoned</td></tr></tbody></table>
<h2>Example</h2><pre><code>{"port": 8900, "timeout": 30}
nanobot serve --config config.json</code></pre>
<p>Restart the server after editing the file.</p></div></div>"""
    must = (
        "Configuration reference",
        "config.json",
        "TCP port to listen on",
        "8900",
        "nanobot serve --config config.json",
        "Restart the server",
    )
    return Page("docs", _CHROME_TOP.format(title="Config reference") + body + _CHROME_BOTTOM, must)


def listing() -> Page:
    items = "".join(
        f'<div class="card"><h3><a href="/item/{i}">Product {i}: steel kettle model K{i}</a></h3>'
        f"<p>Price: {10 + i} EUR. Boils 1.7 l in {90 + i} seconds.</p></div>"
        for i in range(1, 13)
    )
    body = f'<main><h1>Kettles</h1><p>12 results</p><div class="grid">{items}</div></main>'
    must = ("Kettles", "Product 1: steel kettle model K1", "Price: 22 EUR", "Product 12")
    return Page("listing", _CHROME_TOP.format(title="Kettles - Shop") + body + _CHROME_BOTTOM, must)


def big(size: int = 2 * 1024 * 1024) -> Page:
    """An article of about ``size`` bytes: many sections of plain paragraphs."""
    section = (
        "<h2>Section {i}</h2><p>Paragraph {i} of the long report: the committee met on a Tuesday "
        "and reviewed the figures for the quarter, finding them broadly in line with forecasts. "
        "<a href='/n{i}'>Note {i}</a> explains the method.</p>\n"
    )
    head = _CHROME_TOP.format(title="Long report") + "<main><article><h1>The long report</h1>"
    parts, total, i = [head], len(head), 0
    while total < size - 2000:
        piece = section.format(i=i)
        parts.append(piece)
        total += len(piece)
        i += 1
    parts.append("</article></main>" + _CHROME_BOTTOM)
    return Page("big", "".join(parts), ("The long report", "Section 0", f"Section {i - 1}"))


def nested(depth: int = 100_000) -> Page:
    """Hostile: markup nested ``depth`` levels deep."""
    html = "<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth + "</body></html>"
    return Page("nested", html, ())


def real_pages() -> list[Page]:
    return [article(), docs(), listing()]

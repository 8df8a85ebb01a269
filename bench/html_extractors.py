"""Which library turns a fetched page into text: quality and speed, side by side.

Run: ``python -m bench.html_extractors [--repeat 5]``. Candidates that are not
installed are listed as skipped (``pip install html2text readability-lxml
markdownify`` to include them; only trafilatura is a dependency).

For each candidate, on the built pages of :mod:`nanobot.testing.html_pages`
(an article, a docs page with a table and code, a product listing): how many
of the phrases a reader needs it kept, how many script/style fragments and
how many pieces of site chrome (navigation, related links, ads, footer) it
let through, and the median time for those pages and for a 2 MB article.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from nanobot.testing.html_pages import CHROME, NEVER, Page, big, real_pages


def _trafilatura() -> Callable[[str], str]:
    # each candidate is loaded when it is measured
    from nanobot.tools.html_text import html_to_text

    return html_to_text


def _html2text() -> Callable[[str], str]:
    # optional: measured only where installed
    import html2text

    def run(html: str) -> str:
        h = html2text.HTML2Text()
        h.body_width = 0
        h.ignore_images = True
        return h.handle(html)

    return run


def _readability_markdownify() -> Callable[[str], str]:
    # optional: measured only where installed
    from markdownify import markdownify
    from readability import Document

    def run(html: str) -> str:
        return markdownify(Document(html).summary(), strip=["script", "style"])

    return run


CANDIDATES: dict[str, Callable[[], Callable[[str], str]]] = {
    "trafilatura (chosen)": _trafilatura,
    "html2text": _html2text,
    "readability-lxml + markdownify": _readability_markdownify,
}


def timed(run: Callable[[str], str], html: str, repeat: int) -> tuple[str, float]:
    times, text = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        text = run(html)
        times.append(time.perf_counter() - started)
    return text, statistics.median(times) * 1000


def score(run: Callable[[str], str], pages: list[Page], repeat: int) -> dict[str, float]:
    kept = must = never = chrome = 0
    ms = 0.0
    for page in pages:
        text, t = timed(run, page.html, repeat)
        ms += t
        must += len(page.must)
        kept += sum(phrase in text for phrase in page.must)
        never += sum(bad in text for bad in NEVER)
        chrome += sum(piece in text for piece in CHROME)
    return {
        "kept": kept,
        "must": must,
        "never": never,
        "never_of": len(NEVER) * len(pages),
        "chrome": chrome,
        "chrome_of": len(CHROME) * len(pages),
        "pages_ms": ms,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.html_extractors", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="runs per page; the median is reported")
    args = p.parse_args(argv)
    pages, large = real_pages(), big()
    for name, load in CANDIDATES.items():
        try:
            run = load()
        except ImportError as exc:
            print(f"{name}: skipped ({exc.name} is not installed)")
            continue
        s = score(run, pages, args.repeat)
        _, big_ms = timed(run, large.html, max(1, args.repeat // 2))
        print(
            f"{name}: kept {s['kept']}/{s['must']} phrases, scripts/styles {s['never']}/{s['never_of']}, "
            f"chrome {s['chrome']}/{s['chrome_of']}; {s['pages_ms']:.1f} ms for the {len(pages)} pages, "
            f"{big_ms:.0f} ms for {len(large.html) / 1048576:.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

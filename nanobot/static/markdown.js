// A small Markdown renderer for the model's replies, safe by construction.
//
// It builds DOM nodes and sets only text (textContent, text nodes) and two
// checked attributes (a link's http(s) href, a list's start number): no
// string of the model's ever goes through innerHTML, so a reply holding
// <script>, <img onerror=...> or a javascript: link shows as plain text.
// It knows paragraphs, headings, fenced code, inline code, bold and italic,
// lists, block quotes, rules and links; everything else is text.
"use strict";

(() => {
  const FENCE = /^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const LINK = /\[([^\]\n]+)\]\(([^()\s]+)\)/y;
  const BARE_URL = /https?:\/\/[^\s<>()[\]"']+[^\s<>()[\]"'.,;:!?]/y;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The URL if it is an absolute http(s) URL, else null.
  function safeUrl(raw) {
    let url;
    try {
      url = new URL(raw);
    } catch (_) {
      return null;
    }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  function anchor(href) {
    const a = el("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    return a;
  }

  const wordChar = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

  // Appends the inline content of `text` to `out`.
  function inline(text, out) {
    let plain = "";
    const flush = () => {
      if (plain) out.append(document.createTextNode(plain));
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "`") {
        let ticks = 1;
        while (text[i + ticks] === "`") ticks += 1;
        const mark = "`".repeat(ticks);
        const end = text.indexOf(mark, i + ticks);
        if (end > i + ticks) {
          flush();
          out.append(el("code", null, text.slice(i + ticks, end).replace(/^ (.*) $/s, "$1")));
          i = end + ticks;
          continue;
        }
        plain += mark;
        i += ticks;
        continue;
      }
      if (c === "[") {
        LINK.lastIndex = i;
        const m = LINK.exec(text);
        const href = m && safeUrl(m[2]);
        if (href) {
          flush();
          const a = anchor(href);
          inline(m[1], a);
          out.append(a);
          i = LINK.lastIndex;
          continue;
        }
      }
      if (c === "h" && !wordChar(text[i - 1])) {
        BARE_URL.lastIndex = i;
        const m = BARE_URL.exec(text);
        const href = m && safeUrl(m[0]);
        if (href) {
          flush();
          const a = anchor(href);
          a.textContent = m[0];
          out.append(a);
          i = BARE_URL.lastIndex;
          continue;
        }
      }
      if ((c === "*" || c === "_") && !(c === "_" && wordChar(text[i - 1]))) {
        const mark = text[i + 1] === c ? c + c : c;
        const start = i + mark.length;
        const end = text.indexOf(mark, start);
        const closes = end > start && !/\s/.test(text[start]) && !/\s/.test(text[end - 1])
          && !(c === "_" && wordChar(text[end + mark.length]));
        if (closes) {
          flush();
          const node = el(mark.length === 2 ? "strong" : "em");
          inline(text.slice(start, end), node);
          out.append(node);
          i = end + mark.length;
          continue;
        }
        plain += mark; // a run that opens nothing is text, all of it
        i += mark.length;
        continue;
      }
      plain += c;
      i += 1;
    }
    flush();
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || ITEM.test(line) || QUOTE.test(line) || RULE.test(line);
  }

  // Renders Markdown `text` into a DocumentFragment.
  function render(text) {
    const frag = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i += 1;
      } else if ((m = FENCE.exec(line))) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(m[1])) body.push(lines[i++]);
        i += 1; // the closing fence (or the end of a reply still streaming)
        const pre = el("pre");
        const code = el("code", m[2] ? `language-${m[2]}` : null, body.join("\n"));
        pre.append(code);
        frag.append(pre);
      } else if (RULE.test(line)) {
        frag.append(el("hr"));
        i += 1;
      } else if ((m = HEADING.exec(line))) {
        const h = el(`h${m[1].length}`);
        inline(m[2], h);
        frag.append(h);
        i += 1;
      } else if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          body.push(m[1]);
          i += 1;
        }
        const quote = el("blockquote");
        quote.append(render(body.join("\n")));
        frag.append(quote);
      } else if ((m = ITEM.exec(line))) {
        const ordered = /\d/.test(m[1]);
        const list = el(ordered ? "ol" : "ul");
        if (ordered && parseInt(m[1], 10) !== 1) list.start = parseInt(m[1], 10);
        while (i < lines.length && (m = ITEM.exec(lines[i])) && /\d/.test(m[1]) === ordered) {
          const body = [m[2]];
          i += 1;
          // Indented lines go on the same item.
          while (i < lines.length && /^\s+\S/.test(lines[i]) && !ITEM.test(lines[i])) body.push(lines[i++].trim());
          const item = el("li");
          inline(body.join("\n"), item);
          list.append(item);
        }
        frag.append(list);
      } else {
        const body = [line];
        i += 1;
        while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) body.push(lines[i++]);
        const p = el("p");
        inline(body.join("\n"), p);
        frag.append(p);
      }
    }
    return frag;
  }

  window.NanobotMarkdown = Object.freeze({ render });
})();

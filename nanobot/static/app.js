// The built-in chat page: plain JavaScript, no framework, no build step.
//
// It talks to POST /v1/chat/completions on the same origin and reads the SSE
// reply with the fetch body reader. What it keeps in localStorage:
//   nanobot.apiKey              the API key, once the server asked for one
//   nanobot.sessions            the session ids this browser used, newest first
//   nanobot.currentSession      the one shown
//   nanobot.transcript.<id>     what this page showed in that session (display
//                               only: the server keeps the real history)
"use strict";

(() => {
  const API = "/v1/chat/completions";
  const KEY = "nanobot.apiKey";
  const SESSIONS = "nanobot.sessions";
  const CURRENT = "nanobot.currentSession";
  const TRANSCRIPT = "nanobot.transcript.";
  const MAX_ENTRIES = 200; // per session transcript kept for display
  const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), emptyHint: $("empty-hint"), current: $("current-session"), model: $("model-name"),
    sessions: $("session-list"), newSession: $("new-session"), openForm: $("open-session"),
    openInput: $("open-session-id"), forgetKey: $("forget-key"),
    keyForm: $("key-form"), keyMessage: $("key-message"), keyInput: $("key-input"), keyCancel: $("key-cancel"),
    composer: $("composer"), input: $("message-input"), fileInput: $("file-input"),
    attachments: $("attachments"), send: $("send"), stop: $("stop"),
  };

  // ---- storage (the page keeps working when storage is full or disabled) ----

  function load(name, fallback) {
    try {
      const raw = localStorage.getItem(name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (_) {
      return fallback;
    }
  }

  function store(name, value) {
    try {
      if (value === null) localStorage.removeItem(name);
      else localStorage.setItem(name, JSON.stringify(value));
    } catch (_) { /* nothing to do: the page still works for this visit */ }
  }

  const apiKey = () => load(KEY, "");

  // ---- state ----

  let sessions = load(SESSIONS, []).filter((s) => typeof s === "string" && s);
  let current = load(CURRENT, null);
  let transcript = [];
  let pending = [];         // File objects for the next message
  let controller = null;    // AbortController of the request in flight
  let awaitingKey = null;   // {retry, cancel} while the key form is shown
  let objectUrls = [];      // thumbnails shown in the log, revoked on clear
  let shown = null;         // the session whose transcript is on screen

  function newSessionId() {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---- small DOM helpers ----

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const isImage = (file) => IMAGE_TYPES.includes(file.type);

  // A file shown by name, with its extension as a badge (no icon font needed).
  function fileChip(name, image) {
    const chip = el("span", image ? "chip image" : "chip");
    const dot = name.lastIndexOf(".");
    const ext = dot > 0 && name.length - dot <= 6 ? name.slice(dot + 1).toUpperCase() : "FILE";
    chip.append(el("span", "chip-badge", ext), el("span", "chip-name", name));
    chip.title = name;
    return chip;
  }

  function thumbnail(file) {
    const url = URL.createObjectURL(file);
    objectUrls.push(url);
    const img = el("img", "thumb");
    img.src = url;
    img.alt = file.name;
    img.title = file.name;
    return img;
  }

  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  // ---- sessions ----

  function renderSessions() {
    ui.sessions.replaceChildren();
    for (const id of sessions) {
      const item = el("li", "session-item");
      const pick = el("button", "session", id);
      pick.type = "button";
      pick.title = id;
      if (id === current) pick.setAttribute("aria-current", "true");
      pick.addEventListener("click", () => switchTo(id));
      const forget = el("button", "forget", "\u00D7");
      forget.type = "button";
      forget.setAttribute("aria-label", `Forget session ${id}`);
      forget.title = "Forget this session in this browser";
      forget.addEventListener("click", () => forgetSession(id));
      item.append(pick, forget);
      ui.sessions.append(item);
    }
    ui.current.textContent = current;
  }

  function switchTo(id) {
    if (id === shown) return;
    stopRequest();
    current = shown = id;
    if (!sessions.includes(id)) sessions.unshift(id);
    store(SESSIONS, sessions);
    store(CURRENT, current);
    transcript = load(TRANSCRIPT + id, []);
    renderSessions();
    renderTranscript();
    ui.input.focus();
  }

  function forgetSession(id) {
    sessions = sessions.filter((s) => s !== id);
    store(SESSIONS, sessions);
    store(TRANSCRIPT + id, null);
    if (id === current) {
      shown = null;
      switchTo(sessions[0] || newSessionId());
    }
    else renderSessions();
  }

  // ---- the conversation view ----

  function renderTranscript() {
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
    ui.log.replaceChildren(ui.emptyHint);
    for (const entry of transcript) addMessage(entry);
    ui.emptyHint.hidden = transcript.length > 0;
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  // Adds one message to the log; returns a function that redraws it.
  function addMessage(entry, liveFiles) {
    ui.emptyHint.hidden = true;
    const item = el("article", `message ${entry.role}`);
    item.append(el("span", "who", entry.role === "user" ? "You" : "nanobot"));
    const bubble = el("div", "bubble");
    if (entry.files && entry.files.length) {
      const files = el("div", "files");
      entry.files.forEach((f, i) => {
        const live = liveFiles && liveFiles[i];
        files.append(live && f.image ? thumbnail(live) : fileChip(f.name, f.image));
      });
      bubble.append(files);
    }
    const tools = el("ul", "tools");
    const text = el("div", "text");
    const status = el("p", "status");
    bubble.append(tools, text, status);
    item.append(bubble);
    ui.log.append(item);

    let drawn = null; // the text last rendered, so a tool event does not re-render it
    const redraw = () => {
      const follow = nearBottom();
      if (entry.text !== drawn) {
        // The model's text as Markdown, built as DOM nodes (never innerHTML);
        // the user's exactly as typed.
        if (entry.role === "assistant") text.replaceChildren(window.NanobotMarkdown.render(entry.text));
        else text.textContent = entry.text;
        drawn = entry.text;
      }
      text.hidden = !entry.text;
      drawTools(tools, entry.tools || [], Boolean(entry.streaming));
      item.classList.toggle("streaming", Boolean(entry.streaming));
      item.classList.toggle("error", Boolean(entry.error));
      status.hidden = !(entry.error || entry.stopped || entry.note);
      status.setAttribute("role", entry.error ? "alert" : "status");
      status.textContent = entry.error || entry.note || (entry.stopped ? "Stopped." : "");
      if (follow) ui.log.scrollTop = ui.log.scrollHeight;
    };
    redraw();
    ui.log.scrollTop = ui.log.scrollHeight;
    return redraw;
  }

  // One line per tool call of this reply: its name and how it went.
  function drawTools(list, calls, streaming) {
    list.hidden = !calls.length;
    list.replaceChildren(...calls.map((call) => {
      const unfinished = streaming ? "running" : "stopped";
      const state = call.status !== "finished" ? unfinished : call.ok === false ? "failed" : "done";
      const item = el("li", `tool ${state}`);
      const label = { running: "running\u2026", done: "done", failed: "failed", stopped: "stopped" }[state];
      item.append(el("span", "tool-name", call.name), el("span", "tool-state", label));
      return item;
    }));
  }

  function saveTranscript(id, entries) {
    const kept = entries.slice(-MAX_ENTRIES).map(({ streaming, note, ...rest }) => rest);
    store(TRANSCRIPT + id, kept);
  }

  // ---- talking to the server ----

  class ServerError extends Error {}

  function buildRequest(text, files, sessionId) {
    const headers = { Accept: "text/event-stream" };
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (!files.length) {
      headers["Content-Type"] = "application/json";
      const body = {
        messages: [{ role: "user", content: text }], session_id: sessionId, stream: true,
        stream_options: { include_tool_events: true },
      };
      return { headers, body: JSON.stringify(body) };
    }
    const form = new FormData(); // the browser sets the multipart Content-Type
    if (text) form.append("message", text);
    form.append("session_id", sessionId);
    form.append("stream", "true");
    for (const file of files) form.append("files", file, file.name);
    return { headers, body: form };
  }

  async function errorMessage(response) {
    try {
      const doc = await response.json();
      if (doc && doc.error && doc.error.message) return doc.error.message;
    } catch (_) { /* not JSON: fall through */ }
    return `The server answered ${response.status} ${response.statusText}.`.replace(" .", ".");
  }

  // Reads an SSE body; calls onChunk(json) per data frame; resolves at [DONE].
  async function readEvents(response, onChunk) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = frame.split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
          .join("\n");
        if (!data) continue; // a ": ping" comment or an empty event
        if (data === "[DONE]") return;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch (_) {
          throw new ServerError("The server sent a frame that is not JSON.");
        }
        if (chunk.error) throw new ServerError(chunk.error.message || "The server reported an error.");
        onChunk(chunk);
      }
    }
    throw new ServerError("The reply stream ended before it was complete.");
  }

  function onChunk(reply, redraw) {
    // At most one redraw per frame while a long reply streams in.
    let frame = 0;
    const later = () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; redraw(); });
    };
    return (chunk) => {
      if (chunk.model) ui.model.textContent = `model: ${chunk.model}`;
      const choice = chunk.choices && chunk.choices[0];
      const tool = choice && choice.delta && choice.delta.nanobot_tool;
      if (tool && typeof tool.name === "string") {
        reply.tools = reply.tools || [];
        const known = reply.tools.find((t) => t.id && t.id === tool.id);
        if (known) Object.assign(known, { status: tool.status, ok: tool.ok });
        else reply.tools.push({ id: tool.id, name: tool.name, status: tool.status, ok: tool.ok });
        later();
      }
      const piece = choice && (choice.delta ? choice.delta.content : choice.message && choice.message.content);
      if (typeof piece === "string" && piece) {
        reply.text += piece;
        later();
      }
    };
  }

  async function run(job) {
    const { text, files, sessionId, reply, redraw, entries } = job;
    const { headers, body } = buildRequest(text, files, sessionId);
    controller = new AbortController();
    setBusy(true);
    reply.streaming = true;
    reply.note = "";
    redraw();
    let askKey = null;
    try {
      const response = await fetch(API, { method: "POST", headers, body, signal: controller.signal });
      if (response.status === 401) {
        askKey = await errorMessage(response);
      } else if (!response.ok) {
        reply.error = await errorMessage(response);
      } else if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
        onChunk(reply, redraw)(await response.json()); // a server that did not stream
      } else {
        await readEvents(response, onChunk(reply, redraw));
      }
    } catch (err) {
      if (err.name === "AbortError") reply.stopped = true;
      else if (err instanceof ServerError) reply.error = err.message;
      else reply.error = `Could not reach the server (${err.message}).`;
    } finally {
      controller = null;
    }
    reply.streaming = false;
    if (askKey !== null) {
      reply.note = "Waiting for the API key\u2026";
      redraw();
      showKeyForm(askKey, job);
      return;
    }
    redraw();
    saveTranscript(sessionId, entries);
    setBusy(false);
  }

  function send() {
    const text = ui.input.value;
    const files = pending;
    if (controller || awaitingKey || (!text.trim() && !files.length)) return;
    const user = { role: "user", text, files: files.map((f) => ({ name: f.name, image: isImage(f) })) };
    const reply = { role: "assistant", text: "" };
    transcript.push(user, reply);
    addMessage(user, files);
    const redraw = addMessage(reply);
    ui.input.value = "";
    setPending([]);
    saveTranscript(current, transcript);
    run({ text: text.trim() ? text : "", files, sessionId: current, reply, redraw, entries: transcript });
  }

  function stopRequest() {
    if (controller) controller.abort();
    if (awaitingKey) awaitingKey.cancel();
  }

  function setBusy(busy) {
    ui.send.disabled = busy;
    ui.stop.hidden = !busy || Boolean(awaitingKey);
    ui.composer.setAttribute("aria-busy", String(busy));
  }

  // ---- the API key ----

  function showKeyForm(message, job) {
    awaitingKey = {
      retry() {
        awaitingKey = null;
        ui.keyForm.hidden = true;
        run(job);
      },
      cancel() {
        awaitingKey = null;
        ui.keyForm.hidden = true;
        job.reply.note = "";
        job.reply.error = message;
        job.redraw();
        saveTranscript(job.sessionId, job.entries);
        setBusy(false);
      },
    };
    ui.keyMessage.textContent = `${message} This server needs an API key; it is kept in this browser.`;
    ui.keyInput.value = "";
    ui.keyForm.hidden = false;
    ui.stop.hidden = true;
    ui.keyInput.focus();
  }

  function updateForgetKey() {
    ui.forgetKey.hidden = !apiKey();
  }

  // ---- attachments ----

  function setPending(files) {
    pending = files;
    ui.attachments.replaceChildren();
    pending.forEach((file, i) => {
      const item = el("li", "attachment");
      item.append(fileChip(file.name, isImage(file)));
      const remove = el("button", "forget", "\u00D7");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => setPending(pending.filter((_, j) => j !== i)));
      item.append(remove);
      ui.attachments.append(item);
    });
    ui.attachments.hidden = !pending.length;
  }

  function addFiles(list) {
    if (list && list.length) setPending(pending.concat(Array.from(list)));
  }

  // ---- wiring ----

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape" && controller) {
      stopRequest();
    }
  });
  ui.input.addEventListener("paste", (event) => {
    if (event.clipboardData && event.clipboardData.files.length) {
      event.preventDefault();
      addFiles(event.clipboardData.files);
    }
  });
  ui.stop.addEventListener("click", stopRequest);
  ui.fileInput.addEventListener("change", () => {
    addFiles(ui.fileInput.files);
    ui.fileInput.value = ""; // so the same file can be picked again
  });
  for (const target of [ui.log, ui.composer]) {
    target.addEventListener("dragover", (event) => event.preventDefault());
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      addFiles(event.dataTransfer && event.dataTransfer.files);
    });
  }

  ui.newSession.addEventListener("click", () => switchTo(newSessionId()));
  ui.openForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = ui.openInput.value.trim();
    if (!id) return;
    ui.openInput.value = "";
    switchTo(id);
  });

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key || !awaitingKey) return;
    store(KEY, key);
    updateForgetKey();
    awaitingKey.retry();
  });
  ui.keyCancel.addEventListener("click", () => awaitingKey && awaitingKey.cancel());
  ui.forgetKey.addEventListener("click", () => {
    store(KEY, null);
    updateForgetKey();
  });

  setPending([]);
  updateForgetKey();
  switchTo(current && typeof current === "string" ? current : newSessionId());
})();

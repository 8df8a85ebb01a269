// The official openai Node SDK against a nanobot server.
// Usage: node client.mjs BASE_URL SESSION_ID  -> prints one JSON line of results.
import OpenAI from "openai";

const [baseURL, sessionId] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: process.env.NANOBOT_KEY || "unused", maxRetries: 0 });

const plain = await client.chat.completions.create({
  model: process.env.NANOBOT_MODEL,
  messages: [{ role: "user", content: "hello from node" }],
  session_id: sessionId,
});

const stream = await client.chat.completions.create({
  model: process.env.NANOBOT_MODEL,
  messages: [{ role: "user", content: "stream from node" }],
  stream: true,
  stream_options: { include_usage: true },
  session_id: sessionId,
});
const deltas = [];
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length && chunk.choices[0].delta.content) deltas.push(chunk.choices[0].delta.content);
  if (chunk.usage) usage = chunk.usage;
}

// A multipart upload with fetch + FormData, as a browser would send it.
const form = new FormData();
form.append("message", "read the attachment");
form.append("session_id", sessionId);
form.append("files", new Blob([process.env.NANOBOT_FILE_TEXT], { type: "text/plain" }), "note.txt");
const upload = await fetch(`${baseURL}/chat/completions`, {
  method: "POST",
  body: form,
  headers: process.env.NANOBOT_KEY ? { Authorization: `Bearer ${process.env.NANOBOT_KEY}` } : {},
});

console.log(JSON.stringify({
  plain: plain.choices[0].message.content,
  streamed: deltas.join(""),
  chunks: deltas.length,
  usage,
  uploadStatus: upload.status,
  upload: (await upload.json()).choices[0].message.content,
}));

// The official openai Node SDK's Responses API against a nanobot server.
// Usage: node responses.mjs BASE_URL  -> prints one JSON line of results.
import OpenAI from "openai";

const [baseURL] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: process.env.NANOBOT_KEY || "unused", maxRetries: 0 });
const model = process.env.NANOBOT_MODEL;

const first = await client.responses.create({ model, input: "hello from node", instructions: "Be brief." });
const stream = await client.responses.create({
  model, input: "stream from node", previous_response_id: first.id, stream: true,
});
const deltas = [];
const types = [];
let completed = null;
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") deltas.push(event.delta);
  if (event.type === "response.completed") completed = event.response;
}
const helper = client.responses.stream({ model, input: "helper from node" });
const final = await helper.finalResponse();
const retrieved = await client.responses.retrieve(completed.id);
const items = await client.responses.inputItems.list(completed.id);
await client.responses.delete(first.id);
let deletedStatus = null;
try {
  await client.responses.retrieve(first.id);
} catch (err) {
  deletedStatus = err.status;
}

console.log(JSON.stringify({
  plain: first.output_text,
  streamed: deltas.join(""),
  types,
  sequence: completed ? completed.id === retrieved.id : false,
  helper: final.output_text,
  retrieved: retrieved.output_text,
  items: items.data.map((i) => i.content[0].text),
  deletedStatus,
}));

// The official openai npm client against the gateway's OpenAI-compatible port; prints one JSON object of what
// it saw, for tests/gateway/test_openai_node.py. Usage: node clients.mjs <base_url> <api_key>
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const user = (text) => [{ role: "user", content: text }];
const seen = {};

const answer = await client.chat.completions.create({ model: "default", messages: user("[[reply:Hello from node]]") });
seen.completion = { content: answer.choices[0].message.content, finish: answer.choices[0].finish_reason };

const stream = await client.chat.completions.create({
  model: "default",
  messages: user("[[reply:one two three]]"),
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
seen.stream = { text, completion_tokens: usage?.completion_tokens ?? null };

try {
  await client.chat.completions.create({ model: "no-such-route", messages: user("x") });
  seen.unknown = "succeeded";
} catch (error) {
  seen.unknown = { status: error.status, code: error.code, type: error.type };
}

const cut = await client.chat.completions.create({
  model: "default",
  messages: user("[[reply:a b c d]] [[fault:disconnect at=2]]"),
  stream: true,
});
let partial = "";
try {
  for await (const chunk of cut) partial += chunk.choices[0]?.delta?.content ?? "";
  seen.cut = { partial, error: null };
} catch (error) {
  seen.cut = { partial, error: error.constructor.name, message: String(error.message) };
}
console.log(JSON.stringify(seen));

// Load: 200 concurrent streaming chat requests through OpenAI's client against `longctx serve`
// on loopback, twice. Every request completes or is refused with 429/503 (the waiting queue is
// bounded); each completed stream carries its own request's seed-determined text (checked
// against the same request replayed alone); afterwards the KV cache is empty and the server's
// memory is back where the first round left it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { cliPath, loadOpenAI, metrics, startServer, testModelDir } from './server_process.mjs';

const OpenAI = await loadOpenAI();
const REQUESTS = 200;
const ROUND_TIMEOUT_MS = 120000;
let server;
let client;

function requestFor(i) {
  return {
    model: 'tiny',
    messages: [{ role: 'user', content: `Request ${i}: tell me something about the number ${i}.` }],
    max_tokens: 8,
    temperature: 1.0,
    seed: 1000 + i,
  };
}

// One streamed request: its text, or the status it was refused with.
async function streamOne(i) {
  let stream;
  try {
    stream = await client.chat.completions.create({ ...requestFor(i), stream: true, stream_options: { include_usage: true } });
  } catch (error) {
    if (error instanceof OpenAI.APIError && (error.status === 429 || error.status === 503)) {
      return { i, refused: error.status };
    }
    throw error;
  }
  let text = '';
  let usage = null;
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(ids.size, 1, `request ${i}: one id in all chunks`);
  assert.ok(usage, `request ${i}: the usage chunk arrived`);
  return { i, text, id: [...ids][0], usage };
}

async function round() {
  const started = Date.now();
  let timer;
  const results = await Promise.race([
    Promise.all(Array.from({ length: REQUESTS }, (_, i) => streamOne(i))),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('the round took too long')), ROUND_TIMEOUT_MS); }),
  ]);
  clearTimeout(timer);
  return { results, seconds: (Date.now() - started) / 1000 };
}

// Waits until the engine is idle and its KV cache empty, as /metrics reports.
async function idle() {
  const deadline = Date.now() + 10000;
  for (;;) {
    const values = await metrics(server.url);
    if (values['longctx:num_requests_running'] === 0 && values['longctx:num_requests_waiting'] === 0 &&
        values['longctx:kv_cache_usage_perc'] === 0) return values;
    if (Date.now() > deadline) assert.fail(`the engine did not go idle: ${JSON.stringify(values)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  server = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--served-model-name', 'tiny', '--max-model-len', '1024',
    '--kv-cache-memory', '0.25', '--max-num-seqs', '16', '--max-waiting-requests', '64', '--http-threads', '256',
    '--timeout-keep-alive', '1',
  ]);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  if (server) {
    const { code } = await server.stop();
    assert.equal(code, 0, server.stderr());
  }
});

test(`${REQUESTS} concurrent streams: completed or refused, never mixed up, memory back after`, async () => {
  await client.chat.completions.create(requestFor(-1));  // warm up
  await idle();
  const baseline = server.rssMiB();
  const figures = [];
  const rss = [];
  for (const name of ['first', 'second']) {
    const { results, seconds } = await round();
    const completed = results.filter((r) => r.text !== undefined);
    const refused = results.filter((r) => r.refused !== undefined);
    assert.equal(completed.length + refused.length, REQUESTS);
    assert.ok(completed.length >= 16, `at least a batch completes (${completed.length})`);
    assert.equal(new Set(completed.map((r) => r.id)).size, completed.length, 'ids are unique');
    for (const r of completed) assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);

    // Replayed alone, each request writes what its stream carried: no stream got another's text.
    for (const r of completed) {
      const alone = await client.chat.completions.create(requestFor(r.i));
      assert.equal(r.text, alone.choices[0].message.content, `request ${r.i}'s stream carries its own text`);
    }
    const values = await idle();
    rss.push(server.rssMiB());
    figures.push(`${name} round: ${REQUESTS} requests in ${seconds.toFixed(2)} s, ${completed.length} completed, ` +
      `${refused.length} refused (${[...new Set(refused.map((r) => r.refused))].join('/') || '-'}), ` +
      `kv usage after ${values['longctx:kv_cache_usage_perc']}, rss ${rss.at(-1).toFixed(1)} MiB`);
  }
  console.log(`rss before load ${baseline.toFixed(1)} MiB`);
  for (const line of figures) console.log(line);
  const values = await metrics(server.url);
  console.log(`refused by the server: ${values['longctx:request_refused_total{reason="queue_full"}']} (queue full)`);
  // The first round grows the server to its working size (connection threads' stacks, malloc
  // arenas); the second must not add to it.
  assert.ok(rss[1] - rss[0] < 16, `memory grew by ${(rss[1] - rss[0]).toFixed(1)} MiB in the second round`);
  assert.ok(rss[1] - baseline < 64, `memory ${rss[1].toFixed(1)} MiB vs ${baseline.toFixed(1)} MiB before the load`);
});

// `longctx serve` on the bundled test model, driven by OpenAI's own Node client, unmodified:
// chat (plain, streaming, thinking), completions, models, tool definitions and a full tool-call
// round trip, usage and cached tokens, and the error shapes the client turns into exceptions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { cliPath, loadOpenAI, metrics, startServer, testModelDir } from './server_process.mjs';

const OpenAI = await loadOpenAI();
const API_KEY = 'test-key';
let server;
let client;

function longText(words) {
  return Array.from({ length: words }, (_, i) => `word${i % 97}`).join(' ');
}

async function tokenCount(body) {
  const reply = await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(reply.status, 200);
  return (await reply.json()).count;
}

before(async () => {
  server = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--served-model-name', 'tiny,tiny-alias', '--api-key', API_KEY,
    '--max-model-len', '4096', '--kv-cache-memory', '0.25', '--max-body-mib', '1', '--timeout-keep-alive', '1',
  ]);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 60000 });
});

after(async () => {
  if (server) {
    const { code, signal } = await server.stop();
    assert.equal(code, 0, `longctx serve exits 0 on SIGTERM (signal ${signal})\n${server.stderr()}`);
  }
});

test('models list and retrieve', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ['tiny', 'tiny-alias']);
  const model = await client.models.retrieve('tiny');
  assert.equal(model.object, 'model');
  assert.equal(model.owned_by, 'longctx');
});

test('chat completion, then the same request streamed, give the same seeded text and usage', async () => {
  const request = { model: 'tiny', messages: [{ role: 'user', content: 'Hello, who are you?' }], max_tokens: 12, seed: 7 };
  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, 'chat.completion');
  assert.match(whole.id, /^chatcmpl-/);
  const [choice] = whole.choices;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.equal(whole.usage.prompt_tokens, await tokenCount({ model: 'tiny', messages: request.messages }));
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);
  assert.equal(typeof whole.usage.prompt_tokens_details.cached_tokens, 'number');

  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const streamed of chunk.choices) {
      text += streamed.delta.content ?? '';
      finish = streamed.finish_reason ?? finish;
    }
  }
  assert.equal(ids.size, 1, 'every chunk carries the request id');
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('thinking mode and reasoning_effort give reasoning_content', async () => {
  const reply = await client.chat.completions.create({
    model: 'tiny-alias', messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 10, seed: 3,
    reasoning_effort: 'high', thinking: { type: 'enabled' },
  });
  assert.equal(reply.model, 'tiny-alias');
  const { message } = reply.choices[0];
  assert.equal(typeof message.reasoning_content, 'string');
  assert.ok(message.reasoning_content.length + (message.content ?? '').length > 0);
  // Streamed reasoning arrives in delta.reasoning_content.
  const stream = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 10, seed: 3, stream: true,
    chat_template_kwargs: { thinking: true },
  });
  let reasoning = '';
  for await (const chunk of stream) reasoning += chunk.choices[0]?.delta?.reasoning_content ?? '';
  assert.ok(reasoning.length > 0);
});

test('completions, plain and streamed, with logprobs', async () => {
  const whole = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 5, seed: 1, logprobs: 2 });
  assert.equal(whole.object, 'text_completion');
  const [choice] = whole.choices;
  assert.equal(typeof choice.text, 'string');
  assert.equal(choice.logprobs.tokens.length, whole.usage.completion_tokens - (choice.finish_reason === 'stop' ? 1 : 0));
  assert.equal(choice.logprobs.token_logprobs.length, choice.logprobs.tokens.length);
  const stream = await client.completions.create({ model: 'tiny', prompt: 'Hello world', max_tokens: 5, seed: 1, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, choice.text);
});

test('usage counts: a length-limited reply uses exactly max_tokens', async () => {
  const reply = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Count.' }], max_tokens: 9, seed: 2, ignore_eos: true, n: 2,
  });
  assert.equal(reply.choices.length, 2);
  for (const choice of reply.choices) assert.equal(choice.finish_reason, 'length');
  assert.equal(reply.usage.completion_tokens, 18);
});

test('tool definitions reach the prompt and a tool conversation is accepted', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] } } }];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const without = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 2 });
  const withTools = await client.chat.completions.create({ model: 'tiny', messages, tools, max_tokens: 2 });
  assert.ok(withTools.usage.prompt_tokens > without.usage.prompt_tokens + 20, 'the tool schema is in the prompt');
  const none = await client.chat.completions.create({ model: 'tiny', messages, tools, tool_choice: 'none', max_tokens: 2 });
  assert.equal(none.usage.prompt_tokens, without.usage.prompt_tokens);
  const followUp = await client.chat.completions.create({
    model: 'tiny', tools, max_tokens: 4,
    messages: [...messages,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'get_weather', arguments: '{"location": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 22 C' }],
  });
  assert.ok(followUp.usage.prompt_tokens > withTools.usage.prompt_tokens);
});

test('tool call round trip with a model that calls the tool (scripted engine)', async () => {
  const scripted = await startServer(process.env.LONGCTX_SCRIPTED_SERVER, [testModelDir()]);
  try {
    const scriptedClient = new OpenAI({ baseURL: `${scripted.url}/v1`, apiKey: 'none', maxRetries: 0 });
    const tools = [{ type: 'function', function: { name: 'get_weather',
      parameters: { type: 'object', properties: { location: { type: 'string' }, days: { type: 'integer' } } } } }];
    const messages = [{ role: 'user', content: 'Weather in Paris?' }];
    const reply = await scriptedClient.chat.completions.create({ model: 'scripted', messages, tools, tool_choice: 'auto' });
    const [choice] = reply.choices;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, 'Let me look that up.');
    assert.equal(choice.message.tool_calls.length, 1);
    const [call] = choice.message.tool_calls;
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris', days: 3 });

    // The client's stream helper assembles the same call from the deltas.
    const runner = scriptedClient.chat.completions.stream({ model: 'scripted', messages, tools });
    const streamed = await runner.finalChatCompletion();
    assert.equal(streamed.choices[0].finish_reason, 'tool_calls');
    assert.deepEqual(streamed.choices[0].message.tool_calls[0].function, call.function);

    const answer = await scriptedClient.chat.completions.create({
      model: 'scripted', tools,
      messages: [...messages, choice.message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 22 C' }],
    });
    assert.equal(answer.choices[0].message.content, 'It is sunny in Paris, 22 degrees.');
    assert.equal(answer.choices[0].finish_reason, 'stop');
  } finally {
    const { code } = await scripted.stop();
    assert.equal(code, 0);
  }
});

test('a repeated long prompt reports cached tokens', async () => {
  const request = { model: 'tiny', messages: [{ role: 'user', content: longText(400) }], max_tokens: 2 };
  const first = await client.chat.completions.create(request);
  assert.ok(first.usage.prompt_tokens > 512, `prompt of ${first.usage.prompt_tokens} tokens`);
  const second = await client.chat.completions.create(request);
  assert.ok(second.usage.prompt_tokens_details.cached_tokens > 0, JSON.stringify(second.usage));
  const values = await metrics(server.url);
  assert.ok(values['longctx:prefix_cache_hits_total'] > 0);
});

test('errors arrive in OpenAI shape as the client\'s error classes', async () => {
  const request = { model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 };
  const wrongKey = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.chat.completions.create(request), (error) => {
    assert.ok(error instanceof OpenAI.AuthenticationError);
    assert.equal(error.status, 401);
    assert.equal(error.code, 'invalid_api_key');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ ...request, model: 'gpt-4o' }), (error) => {
    assert.ok(error instanceof OpenAI.NotFoundError);
    assert.equal(error.param, 'model');
    return true;
  });
  for (const [field, value] of [['max_tokens', -1], ['temperature', 'hot'], ['n', 0], ['top_logprobs', 3]]) {
    await assert.rejects(client.chat.completions.create({ ...request, [field]: value }), (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `${field}: ${error}`);
      assert.equal(error.param, field);
      assert.equal(error.type, 'invalid_request_error');
      assert.match(error.message, new RegExp(field));
      return true;
    });
  }
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x'.repeat(2 << 20), max_tokens: 1 }), (error) => {
    assert.ok(error instanceof OpenAI.APIError);
    assert.equal(error.status, 413);
    assert.equal(error.code, 'request_too_large');
    return true;
  });
  // Malformed JSON is not something the client sends; plain fetch does.
  const malformed = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${API_KEY}` }, body: '{"model": "tiny", "messages": [',
  });
  assert.equal(malformed.status, 400);
  const body = await malformed.json();
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
});

test('a full waiting queue is a 429 RateLimitError', async () => {
  const full = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--served-model-name', 'tiny', '--max-num-seqs', '1',
    '--max-waiting-requests', '0', '--kv-cache-memory', '0.25', '--max-model-len', '2048', '--timeout-keep-alive', '1',
  ]);
  try {
    const fullClient = new OpenAI({ baseURL: `${full.url}/v1`, apiKey: 'none', maxRetries: 0 });
    // The one batch slot takes a long request; the next finds no room and no queue.
    const running = await fullClient.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], stream: true, max_tokens: 1500,
      temperature: 1, ignore_eos: true });
    const iterator = running[Symbol.asyncIterator]();
    await iterator.next();  // admitted and streaming
    await assert.rejects(
      fullClient.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], stream: true }),
      (error) => {
        assert.ok(error instanceof OpenAI.RateLimitError);
        assert.equal(error.headers.get('retry-after'), '1');
        return true;
      });
    running.controller.abort();  // hang up: the server aborts it and frees the slot
  } finally {
    const { code } = await full.stop();
    assert.equal(code, 0);
  }
});

test('MTP speculative decoding (--speculative-config) serves the same seeded text', async () => {
  const speculative = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--served-model-name', 'tiny', '--max-model-len', '1024',
    '--kv-cache-memory', '0.25', '--timeout-keep-alive', '1',
    '--speculative-config', '{"method":"mtp","num_speculative_tokens":1}',
  ]);
  try {
    const drafting = new OpenAI({ baseURL: `${speculative.url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
    for (const [seed, temperature] of [[1, 0], [2, 0.8], [3, 1.0]]) {
      const request = { messages: [{ role: 'user', content: `Seed ${seed}: count to ten.` }], max_tokens: 16, seed, temperature };
      const plain = await client.chat.completions.create({ ...request, model: 'tiny' });
      const drafted = await drafting.chat.completions.create({ ...request, model: 'tiny' });
      assert.equal(drafted.choices[0].message.content, plain.choices[0].message.content, `seed ${seed}`);
      assert.equal(drafted.usage.completion_tokens, plain.usage.completion_tokens);
    }
    const values = await metrics(speculative.url);
    assert.ok(values['longctx:spec_decode_num_draft_tokens_total'] > 0, 'drafts were verified');
  } finally {
    const { code } = await speculative.stop();
    assert.equal(code, 0, speculative.stderr());
  }
});

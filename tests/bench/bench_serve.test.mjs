// `longctx bench serve` against `longctx serve` on the bundled tiny model: the figures it saves
// must add up (requests, token counts from the stream's usage, per-request timings that are
// consistent with each other), for both endpoints and with a request rate; refused requests
// count as failed with their status; an unreachable server and bad flags are clear errors.
// Nothing here asserts how fast anything is.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { cliPath, startServer, testModelDir } from '../server/node/server_process.mjs';

const PROMPTS = 12;
const INPUT_LEN = 32;
const OUTPUT_LEN = 8;
const CONCURRENCY = 4;

let server;
let resultDir;

// Runs `longctx bench serve ARGS`; never rejects: the exit code is part of the answer.
function bench(args, timeoutMs = 60000) {
  return new Promise((resolve) => {
    execFile(cliPath(), ['bench', 'serve', ...args], { timeout: timeoutMs }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr });
    });
  });
}

// A loopback port that was free a moment ago: nothing listens there.
function closedPort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// Runs a benchmark that must succeed and returns its saved result.
async function benchResult(name, args) {
  const file = path.join(resultDir, `${name}.json`);
  const run = await bench([...args, '--save-result', '--result-filename', file]);
  assert.equal(run.code, 0, `bench serve failed:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /Serving Benchmark Result/);
  assert.match(run.stdout, /Successful requests:\s+\d+/);
  return { result: JSON.parse(fs.readFileSync(file, 'utf8')), stdout: run.stdout };
}

// Each completed request's own figures agree with one another.
function checkRequestTimings(result) {
  for (const r of result.requests.filter((request) => request.success)) {
    const where = `request ${r.index}`;
    assert.ok(r.usage_reported, `${where}: the stream carried usage`);
    assert.ok(r.ttft_ms > 0 && r.ttft_ms <= r.e2el_ms, `${where}: 0 < ttft ${r.ttft_ms} <= e2el ${r.e2el_ms}`);
    // One gap per output chunk after the first; a chunk may carry several tokens (a token that
    // ends inside a UTF-8 character waits for the next), never none.
    assert.ok(r.output_chunks >= 1 && r.output_chunks <= r.output_tokens,
      `${where}: ${r.output_chunks} output chunks for ${r.output_tokens} tokens`);
    assert.equal(r.itl_ms.length, r.output_chunks - 1, `${where}: itl count`);
    const gaps = r.itl_ms.reduce((sum, gap) => sum + gap, 0);
    assert.ok(r.itl_ms.every((gap) => gap >= 0), `${where}: gaps are >= 0`);
    assert.ok(gaps <= r.e2el_ms - r.ttft_ms + 1e-6, `${where}: gaps ${gaps} within e2el - ttft`);
    if (r.output_tokens >= 2) {
      const tpot = (r.e2el_ms - r.ttft_ms) / (r.output_tokens - 1);
      assert.ok(Math.abs(r.tpot_ms - tpot) < 1e-6, `${where}: tpot ${r.tpot_ms} vs ${tpot}`);
    }
  }
}

function checkTotals(result) {
  const completed = result.requests.filter((r) => r.success);
  assert.equal(result.completed, completed.length);
  assert.equal(result.failed, result.requests.length - completed.length);
  assert.equal(result.total_input_tokens, completed.reduce((sum, r) => sum + r.input_tokens, 0));
  assert.equal(result.total_output_tokens, completed.reduce((sum, r) => sum + r.output_tokens, 0));
  for (const key of ['duration', 'request_throughput', 'output_throughput', 'total_token_throughput',
    'mean_ttft_ms', 'median_ttft_ms', 'p99_ttft_ms', 'mean_tpot_ms', 'mean_itl_ms', 'mean_e2el_ms']) {
    assert.ok(Number.isFinite(result[key]) && result[key] > 0, `${key} = ${result[key]}`);
  }
  assert.ok(result.median_ttft_ms <= result.p99_ttft_ms, 'median <= p99');
}

before(async () => {
  resultDir = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-bench-serve-'));
  server = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--served-model-name', 'tiny', '--max-model-len', '1024',
    '--kv-cache-memory', '0.25',
  ]);
});

after(async () => {
  if (server) await server.stop();
  if (resultDir) fs.rmSync(resultDir, { recursive: true, force: true });
});

const fixedLoad = ['--num-prompts', `${PROMPTS}`, '--max-concurrency', `${CONCURRENCY}`,
  '--random-input-len', `${INPUT_LEN}`, '--random-output-len', `${OUTPUT_LEN}`, '--ignore-eos'];

test('completions: token-id prompts of exact length, outputs of exactly max_tokens', async () => {
  const { result, stdout } = await benchResult('completions', ['--base-url', server.url, ...fixedLoad]);
  assert.equal(result.model_id, 'tiny', 'the model comes from GET /v1/models');
  assert.equal(result.endpoint, '/v1/completions');
  assert.equal(result.completed, PROMPTS, JSON.stringify(result.errors));
  assert.equal(result.failed, 0);
  assert.equal(result.total_input_tokens, PROMPTS * INPUT_LEN);
  assert.equal(result.total_output_tokens, PROMPTS * OUTPUT_LEN);
  assert.equal(result.requests.length, PROMPTS);
  for (const r of result.requests) {
    assert.equal(r.input_tokens, INPUT_LEN);
    assert.equal(r.output_tokens, OUTPUT_LEN);
  }
  assert.ok(result.max_concurrency_achieved >= 1 && result.max_concurrency_achieved <= CONCURRENCY,
    `max concurrency achieved ${result.max_concurrency_achieved}`);
  checkTotals(result);
  checkRequestTimings(result);
  assert.match(stdout, new RegExp(`Successful requests:\\s+${PROMPTS}\\n`));
  assert.match(stdout, new RegExp(`Total generated tokens:\\s+${PROMPTS * OUTPUT_LEN}\\n`));
  for (const label of ['TTFT', 'TPOT', 'ITL', 'E2EL']) {
    assert.match(stdout, new RegExp(`Mean ${label} \\(ms\\):`));
    assert.match(stdout, new RegExp(`P99 ${label} \\(ms\\):`));
  }
});

test('chat completions: prompt tokens from usage, outputs of exactly max_tokens', async () => {
  // An OpenAI-style base URL (".../v1") works as well as the server root.
  const { result } = await benchResult('chat', [
    '--base-url', `${server.url}/v1`, '--endpoint', '/v1/chat/completions', '--model', 'tiny', ...fixedLoad,
    '--metric-percentiles', '50,90',
  ]);
  assert.equal(result.backend, 'openai-chat');
  assert.equal(result.completed, PROMPTS, JSON.stringify(result.errors));
  assert.equal(result.failed, 0);
  assert.equal(result.total_output_tokens, PROMPTS * OUTPUT_LEN);
  // The chat template adds tokens around the words; the server's usage is what counts.
  for (const r of result.requests) assert.ok(r.input_tokens >= INPUT_LEN / 2, `prompt of ${r.input_tokens} tokens`);
  assert.ok('p90_ttft_ms' in result && 'p50_itl_ms' in result && !('p99_ttft_ms' in result));
  checkRequestTimings(result);
});

test('request rate, shared prefix and length ranges', async () => {
  const prefix = 16;
  const { result } = await benchResult('rate', [
    '--url', server.url, '--num-prompts', '8', '--request-rate', '40', '--burstiness', '0.5', '--seed', '7',
    '--random-prefix-len', `${prefix}`, '--random-input-len', '16', '--random-output-len', '6',
    '--random-range-ratio', '0.5', '--ignore-eos',
  ]);
  assert.equal(result.completed, 8, JSON.stringify(result.errors));
  for (const r of result.requests) {
    assert.ok(r.input_tokens >= prefix + 8 && r.input_tokens <= prefix + 24, `input ${r.input_tokens}`);
    assert.ok(r.output_tokens >= 3 && r.output_tokens <= 9, `output ${r.output_tokens}`);
  }
  assert.ok(new Set(result.requests.map((r) => r.input_tokens)).size > 1, 'lengths vary');
  // Arrivals are spread: the last request cannot be sent before its arrival time.
  assert.ok(Math.max(...result.requests.map((r) => r.start_s)) > 0);
  checkTotals(result);
  checkRequestTimings(result);
});

test('refused requests count as failed, with their status', async () => {
  const small = await startServer(cliPath(), [
    'serve', testModelDir(), '--port', '0', '--max-model-len', '1024', '--kv-cache-memory', '0.25',
    '--max-num-seqs', '1', '--max-waiting-requests', '1',
  ]);
  try {
    const file = path.join(resultDir, 'refused.json');
    const run = await bench(['--base-url', small.url, '--num-prompts', '6', '--random-input-len', '16',
      '--random-output-len', '64', '--ignore-eos', '--result-filename', file]);
    assert.ok(fs.existsSync(file), `no result saved:\n${run.stdout}\n${run.stderr}`);
    const result = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(result.completed + result.failed, 6);
    assert.ok(result.failed >= 1, 'one running and one waiting: more simultaneous requests are refused');
    for (const r of result.requests.filter((request) => !request.success)) {
      assert.equal(r.http_status, 429, r.error);
      assert.match(r.error, /^HTTP 429: /);
    }
    assert.match(run.stdout, /Failed requests:\s+[1-9]/);
    assert.match(run.stdout, /x HTTP 429: /);
    // The command fails only when nothing completed.
    assert.equal(run.code, result.completed > 0 ? 0 : 1, run.stderr);
  } finally {
    await small.stop();
  }
});

test('an unreachable server is a clear error', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const run = await bench(['--base-url', url, '--num-prompts', '2']);
  assert.notEqual(run.code, 0);
  assert.match(run.stderr, /cannot reach the server at http:\/\/127\.0\.0\.1:\d+\/v1\/models: cannot connect/);
  const withModel = await bench(['--base-url', url, '--model', 'tiny', '--num-prompts', '2']);
  assert.notEqual(withModel.code, 0);
  assert.match(withModel.stderr, /probe request .* failed: cannot connect/);
});

test('bad flags are clear errors', async () => {
  const cases = [
    [['--bogus', '1'], /unknown flag --bogus/],
    [['--base-url', 'ftp://x'], /must start with http:\/\/ or https:\/\//],
    [['--num-prompts', '0'], /--num-prompts must be at least 1/],
    [['--request-rate', 'fast'], /--request-rate must be a number/],
    [['--random-range-ratio', '1.5'], /--random-range-ratio must be in \[0, 1\)/],
    [['--percentile-metrics', 'ttft,speed'], /unknown metric 'speed'/],
    [['--backend', 'openai-chat', '--endpoint', '/v1/completions'], /disagree/],
    [['--dataset-name', 'fixed', '--random-range-ratio', '0.2'], /fixed sends exact lengths/],
  ];
  for (const [args, message] of cases) {
    const run = await bench(args);
    assert.notEqual(run.code, 0, `${args.join(' ')} must fail`);
    assert.match(run.stderr, message);
  }
});

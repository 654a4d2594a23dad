// Starting and stopping the servers under test: `longctx serve` (or the scripted test server)
// as a child process on a free loopback port (--port 0: the OS picks it, the server prints its
// URL), and the `openai` package, which must be installed (npm ci --prefix tests/server/node).
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export async function loadOpenAI() {
  try {
    return (await import('openai')).default;
  } catch (error) {
    throw new Error(
      `the npm package 'openai' is not installed (${error.message}).\n` +
        'Install it with: npm ci --prefix tests/server/node   (scripts/run-tests.sh does this)');
  }
}

export function cliPath() {
  const cli = process.env.LONGCTX_CLI;
  if (!cli || !fs.existsSync(cli)) {
    throw new Error(`LONGCTX_CLI must name the built longctx binary (got '${cli}'); run these tests through ctest`);
  }
  return cli;
}

// The bundled test model; ctest's fixture writes it, a hand run gets a fresh one.
export function testModelDir() {
  let dir = process.env.LONGCTX_TEST_MODEL;
  if (!dir) dir = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-server-test-'));
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    execFileSync(cliPath(), ['make-test-model', dir], { stdio: 'inherit' });
  }
  return dir;
}

const running = new Set();
// A test that dies must not leave servers behind.
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startServer(command, args, { readyTimeoutMs = 60000 } = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (data) => { stderr += data; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    running.delete(child);
    resolve({ code, signal });
  }));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server printed no URL within ${readyTimeoutMs} ms\n${stderr}`));
    }, readyTimeoutMs);
    child.stdout.on('data', (data) => {
      stdout += data;
      const match = stdout.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the server exited before it was ready (code ${code}, signal ${signal})\n${stderr}`));
    });
  });
  if (!url.startsWith('http://127.0.0.1:')) throw new Error(`tests only talk to loopback, got ${url}`);
  return {
    url,
    pid: child.pid,
    stderr: () => stderr,
    // Resident memory of the server process, in MiB (Linux).
    rssMiB() {
      const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
      return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;
    },
    // SIGTERM, then the exit status; SIGKILL and an error when it does not exit in time.
    async stop(timeoutMs = 30000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      let timer;
      const result = await Promise.race([
        exited,
        new Promise((resolve) => { timer = setTimeout(() => resolve(null), timeoutMs); }),
      ]);
      clearTimeout(timer);
      if (result === null) {
        child.kill('SIGKILL');
        throw new Error(`the server did not exit within ${timeoutMs} ms of SIGTERM\n${stderr}`);
      }
      return result;
    },
  };
}

// GET /metrics as {name{labels}: value}.
export async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values[line.slice(0, at).replace(/\{model_name="[^"]*",?/, '{').replace('{}', '')] = Number(line.slice(at + 1));
  }
  return values;
}

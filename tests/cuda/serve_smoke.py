#!/usr/bin/env python3
"""`longctx serve --device cuda` end to end on the device machine: start it on a free port, one
chat completion, the same request streamed (same seeded text), /metrics, then SIGTERM and exit 0.
usage: serve_smoke.py LONGCTX MODEL_DIR [extra serve flags...]"""
import json, re, signal, subprocess, sys, time, urllib.request

cli, model, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
server = subprocess.Popen([cli, 'serve', model, '--device', 'cuda', '--port', '0', '--served-model-name', 'tiny',
                           '--max-model-len', '4096', '--kv-cache-memory', '1'] + extra,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
line = server.stdout.readline()
match = re.search(r'listening on (http://\S+)', line)
if not match:
    server.kill()
    sys.exit(f'serve did not start: {line!r} {server.stderr.read()[-2000:]}')
url = match.group(1)

def post(path, body):
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {'Content-Type': 'application/json'})
    return urllib.request.urlopen(request, timeout=120)

body = {'model': 'tiny', 'messages': [{'role': 'user', 'content': 'Hello from the GPU'}], 'max_tokens': 24,
        'seed': 5, 'temperature': 0.8}
started = time.time()
whole = json.load(post('/v1/chat/completions', body))
text = whole['choices'][0]['message']['content']
streamed = ''
for raw in post('/v1/chat/completions', dict(body, stream=True)):
    line = raw.decode().strip()
    if line.startswith('data: ') and line != 'data: [DONE]':
        for choice in json.loads(line[6:])['choices']:
            streamed += choice['delta'].get('content') or ''
metrics = urllib.request.urlopen(url + '/metrics', timeout=30).read().decode()
server.send_signal(signal.SIGTERM)
code = server.wait(timeout=60)
ok = streamed == text and whole['usage']['completion_tokens'] > 0 and code == 0 and \
    'longctx:generation_tokens_total' in metrics
print(f"serve --device cuda {' '.join(extra)}: chat {whole['usage']}, stream == non-stream: {streamed == text}, "
      f"exit {code}, {time.time() - started:.1f} s: {'PASSED' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)

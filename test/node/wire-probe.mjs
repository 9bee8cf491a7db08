// Wire probe: drives one WebSocket connection (or one HTTP POST) with the
// `ws` client as a test script says, and prints what the client saw, one JSON
// event per line, so that the Go e2e tests can assert exact close codes,
// reasons and refusals over ws:// and wss://. test/python/wire_probe.py is the
// same probe on Python's `websockets`; both take the same spec and print the
// same events.
//
// Usage: node wire-probe.mjs '<spec JSON>'
//   {"url":"wss://127.0.0.1:P/mcp", "ca":"/path/ca.pem", "origin":"https://x",
//    "steps":[{"text":"..."}, {"recv":true}, {"binary":"..."}, {"big":70000},
//             {"repeat":"...","n":30}, {"ready":true}, {"close":1000}],
//    "timeout_ms":10000}
//   {"post":"https://127.0.0.1:P/tickets", "ca":"...", "token":"T", "origin":"..."}
// Events: {"event":"open","protocol":P} {"event":"message","data":S}
//   {"event":"close","code":N,"reason":S} {"event":"refused","status":N,"body":S}
//   {"event":"error","message":S} {"event":"ready"} {"event":"timeout"}
//   {"event":"http","status":N,"body":S,"cache_control":S}
// A close (or a refusal, or the HTTP answer) ends the probe with exit 0; the
// timeout exits 1; a bad spec exits 2.
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import WebSocket from 'ws';

let spec;
try {
  spec = JSON.parse(process.argv[2]);
} catch (e) {
  console.error(`wire-probe: bad spec: ${e.message}`);
  process.exit(2);
}
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const ca = spec.ca ? fs.readFileSync(spec.ca) : undefined;
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, spec.timeout_ms || 10_000);

if (spec.post) {
  const u = new URL(spec.post);
  const headers = { 'Content-Length': '0' };
  if (spec.token) headers.Authorization = `Bearer ${spec.token}`;
  if (spec.origin) headers.Origin = spec.origin;
  const mod = u.protocol === 'https:' ? https : http;
  const req = mod.request(u, { method: 'POST', headers, ca }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    res.on('end', () => {
      emit({ event: 'http', status: res.statusCode, body, cache_control: res.headers['cache-control'] || '' });
      process.exit(0);
    });
  });
  req.on('error', (e) => { emit({ event: 'error', message: e.message }); process.exit(0); });
  req.end();
} else {
  const ws = new WebSocket(spec.url, 'mcp', { ca, origin: spec.origin || undefined, maxPayload: 16 << 20 });
  const queue = [];
  let waiter = null;
  ws.on('open', () => emit({ event: 'open', protocol: ws.protocol }));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? `<binary ${data.length} bytes>` : data.toString();
    emit({ event: 'message', data: text });
    queue.push(text);
    if (waiter) { const w = waiter; waiter = null; w(); }
  });
  ws.on('unexpected-response', (req, res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    const done = () => { emit({ event: 'refused', status: res.statusCode, body }); process.exit(0); };
    res.on('end', done);
    res.on('error', done);
    res.on('close', done);
  });
  ws.on('error', (e) => emit({ event: 'error', message: e.message }));
  ws.on('close', (code, reason) => {
    emit({ event: 'close', code, reason: reason.toString() });
    process.exit(0);
  });
  await new Promise((resolve) => ws.once('open', resolve));
  const recv = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => { waiter = () => r(queue.shift()); }));
  for (const step of spec.steps || []) {
    if ('text' in step) ws.send(step.text);
    else if ('binary' in step) ws.send(Buffer.from(step.binary), { binary: true });
    else if ('big' in step) {
      const head = '{"jsonrpc":"2.0","id":"big","method":"ping","params":{"pad":"';
      ws.send(head + 'a'.repeat(Math.max(0, step.big - head.length - 3)) + '"}}');
    } else if ('repeat' in step) for (let i = 0; i < step.n; i++) ws.send(step.repeat);
    else if ('recv' in step) await recv();
    else if ('ready' in step) emit({ event: 'ready' });
    else if ('close' in step) ws.close(step.close, step.reason || '');
    else { console.error(`wire-probe: unknown step ${JSON.stringify(step)}`); process.exit(2); }
  }
  // Wait for the close (the timer above bounds it).
}

// Raw WebSocket client for the gateway: subprotocol "mcp", first-message auth,
// then JSON-RPC over text frames with ids preserved exactly.
// Usage: node ws-client.mjs <url> <token>
import WebSocket from 'ws';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node ws-client.mjs <url> <token>');
  process.exit(2);
}

const fail = (msg) => {
  console.error(`ws-client: FAIL: ${msg}`);
  process.exit(1);
};
const step = (obj) => console.log(JSON.stringify(obj));
setTimeout(() => fail('timeout after 10s'), 10_000);

const ws = new WebSocket(url, 'mcp');

// Incoming text messages are queued; next() awaits the next one.
const queue = [];
let waiter = null;
ws.on('message', (data, isBinary) => {
  if (isBinary) fail('unexpected binary message');
  const text = data.toString();
  if (waiter) { const w = waiter; waiter = null; w(text); } else queue.push(text);
});
ws.on('close', (code, reason) => {
  if (!closing) fail(`connection closed unexpectedly: code=${code} reason=${JSON.stringify(reason.toString())}`);
});
ws.on('error', (err) => fail(`websocket error: ${err.message}`));
ws.on('unexpected-response', (_req, res) => fail(`upgrade refused: HTTP ${res.statusCode}`));
let closing = false;

const nextText = () =>
  queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => { waiter = resolve; });

const nextJSON = async () => {
  const text = await nextText();
  try { return JSON.parse(text); } catch { fail(`reply is not JSON: ${text}`); }
};

// Next JSON-RPC response; server notifications (method, no id) are skipped.
const nextResponse = async () => {
  for (;;) {
    const msg = await nextJSON();
    if (msg && typeof msg.method === 'string') {
      if (!('id' in msg)) { console.error(`ws-client: skipping notification ${msg.method}`); continue; }
      fail(`unexpected server request: ${JSON.stringify(msg)}`);
    }
    return msg;
  }
};

await new Promise((resolve) => ws.once('open', resolve));
if (ws.protocol !== 'mcp') fail(`server selected subprotocol ${JSON.stringify(ws.protocol)}, want "mcp"`);
step({ step: 'open', protocol: ws.protocol });

// 1. First-message auth.
ws.send(JSON.stringify({ type: 'auth', token }));
const auth = await nextJSON();
if (auth?.type !== 'auth_ok' || typeof auth.session !== 'string' || !auth.session) {
  fail(`expected {"type":"auth_ok","session":"..."}, got ${JSON.stringify(auth)}`);
}
step({ step: 'auth_ok', session: auth.session });

// 2. tools/call echo with a string id.
ws.send(JSON.stringify({
  jsonrpc: '2.0', id: 'req-1', method: 'tools/call',
  params: { name: 'echo', arguments: { message: 'hello from ws' } },
}));
const call = await nextResponse();
if (call.id !== 'req-1') fail(`tools/call reply id is ${JSON.stringify(call.id)}, want the string "req-1"`);
if (call.error) fail(`tools/call returned error: ${JSON.stringify(call.error)}`);
const text = call.result?.content?.[0]?.text;
if (text !== 'Echo: hello from ws') fail(`tools/call text is ${JSON.stringify(text)}, want "Echo: hello from ws"`);
step({ step: 'tools/call', id: call.id, text });

// 3. ping with a numeric id.
ws.send(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'ping' }));
const ping = await nextResponse();
if (ping.id !== 7) fail(`ping reply id is ${JSON.stringify(ping.id)}, want the number 7`);
if (ping.error || !('result' in ping)) fail(`ping did not return a result: ${JSON.stringify(ping)}`);
step({ step: 'ping', id: ping.id });

// 4. Normal close.
closing = true;
const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
ws.close(1000, 'done');
const code = await closed;
step({ step: 'closed', code });
console.log('OK');
process.exit(0);

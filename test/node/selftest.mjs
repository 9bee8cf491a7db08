// npm test: start fake-gateway.mjs on a free port, run both clients against it
// (good token must pass, bad token must fail), then stop the fake gateway.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

const here = (f) => new URL(f, import.meta.url).pathname;
const TOKEN = 'selftest-token';

const gw = spawn(process.execPath, [here('fake-gateway.mjs'), TOKEN, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const [line] = await once(createInterface({ input: gw.stdout }), 'line');
const url = `ws://127.0.0.1:${JSON.parse(line).port}/mcp`;

const cases = [
  ['ws-client.mjs', TOKEN, 0],
  ['sdk-client.mjs', TOKEN, 0],
  ['ws-client.mjs', 'wrong-token', 1],
  ['sdk-client.mjs', 'wrong-token', 1],
];
let failed = 0;
for (const [script, token, want] of cases) {
  const r = spawnSync(process.execPath, [here(script), url, token], { encoding: 'utf8', timeout: 20_000 });
  const good = r.status === want && (want !== 0 || r.stdout.trimEnd().endsWith('\nOK'));
  if (!good) failed++;
  console.log(`${good ? 'PASS' : 'FAIL'} ${script} token=${token} exit=${r.status} (want ${want})`);
  if (!good || process.env.VERBOSE) process.stdout.write(r.stdout + r.stderr);
}
gw.kill();
console.log(failed ? `${failed} failed` : 'all passed');
process.exit(failed ? 1 : 0);

// Preloaded (`node --require bench-preload.cjs`) into the Node servers that
// `make bench` measures. It changes nothing in how they serve; it only:
//   - binds 127.0.0.1 when a server calls listen() with a port and no host
//     (supergateway's ws mode calls listen(port), which would bind every
//     interface), so the benchmark never exposes a server off the machine;
//   - runs a full garbage collection on SIGUSR2 when node was started with
//     --expose-gc, so that the idle scenario can report the RSS per
//     connection "once V8 has collected" at a known instant instead of
//     whenever V8's memory reducer happens to run.
'use strict';
const net = require('node:net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (a0 !== null && typeof a0 === 'object' && a0.port !== undefined && !a0.host && !a0.path) {
    args[0] = { ...a0, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
if (typeof globalThis.gc === 'function') {
  process.on('SIGUSR2', () => {
    globalThis.gc();
    globalThis.gc(); // a second pass frees what the first one's finalizers released
  });
}

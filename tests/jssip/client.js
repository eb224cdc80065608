'use strict';
// JsSIP user agents for tests/tests/jssip_chain.rs: one per DN, registering over a WebSocket.
// Usage: node client.js WS_URL DOMAIN EXPIRES DN...
// Prints one JSON line per event on stdout; reads commands from stdin: `unregister`, `stop`.
// node_modules comes from NODE_PATH (npm ci by `cargo xtask setup`, outside the repository).

// JsSIP logs its debug lines (DEBUG=JsSIP:...) with console.info: stdout is for our events.
console.info = console.error;
// Node 20 has no global WebSocket; JsSIP's WebSocketInterface uses the global one.
global.WebSocket = require('ws');
const JsSIP = require('jssip');
const readline = require('readline');

const [wsUrl, domain, expires, ...dns] = process.argv.slice(2);

function emit(ev, dn, extra) {
  process.stdout.write(`${JSON.stringify({ ev, dn, ...extra })}\n`);
}

const uas = dns.map((dn) => {
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(wsUrl)],
    uri: `sip:${dn}@${domain}`,
    register: true,
    register_expires: Number(expires),
    user_agent: `JsSIP ${JsSIP.version}`,
  });
  ua.on('connected', () => emit('connected', dn));
  ua.on('disconnected', () => emit('disconnected', dn));
  // The Contact JsSIP puts in its REGISTERs (a random user at a random .invalid host).
  ua.on('registered', () => emit('registered', dn, { contact: ua.contact.uri.toString() }));
  ua.on('unregistered', () => emit('unregistered', dn));
  ua.on('registrationFailed', (e) => emit('registrationFailed', dn, { cause: String(e.cause) }));
  ua.start();
  return ua;
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'unregister') {
    uas.forEach((ua) => ua.unregister());
  } else if (line === 'stop') {
    uas.forEach((ua) => ua.stop());
    // Give the WebSockets a moment to close, then leave whatever is still pending.
    setTimeout(() => process.exit(0), 200);
  }
});
// The test closing our stdin (or dying) ends the client.
process.stdin.on('end', () => process.exit(0));

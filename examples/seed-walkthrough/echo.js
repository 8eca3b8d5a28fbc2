#!/usr/bin/env node
// Pods and clients of the two-site walkthrough (two-site.sh), with Node's standard library only:
//   echo.js serve HOST TCP UDP WS [H2C]  TCP echo (keeps half-close), UDP echo, WebSocket echo,
//                                        an HTTP/2 (h2c) server answering `h2-echo:<version>`
//   echo.js tcp HOST PORT TEXT           prints what comes back after a half-close
//   echo.js udp HOST PORT TEXT           prints the reply datagram (exit 1 after 3 s)
//   echo.js ws HOST PORT TEXT            upgrades, sends one text frame, prints the echoed one
//   echo.js probe DIR NODE RELAY TO HOST PORT
//                                        opens a tunnel stream as NODE (its certificate in DIR)
//                                        through RELAY to HOST:PORT on node TO; prints the outcome
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const http = require('node:http');
const crypto = require('node:crypto');
const path = require('node:path');
const { setTimeout } = require('node:timers');

const [cmd, ...a] = process.argv.slice(2);
const die = (m) => {
  process.stderr.write(`${m}\n`);
  process.exit(1);
};
setTimeout(() => cmd !== 'serve' && die(`${cmd}: no answer in 5 s`), 5000).unref();

if (cmd === 'serve') {
  const [host, tcp, udp, ws, h2c] = a;
  if (h2c)
    require('node:http2')
      .createServer((req, res) => res.end(`h2-echo:${req.httpVersion}\n`))
      .listen(Number(h2c), host);
  net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s)).listen(Number(tcp), host);
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
  u.bind(Number(udp), host);
  const server = http.createServer((_q, res) => res.end('ws-echo\n'));
  server.on('upgrade', (req, sock) => {
    const accept = crypto
      .createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    sock.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    sock.on('data', (f) => {
      const len = f[1] & 0x7f; // short frames only (the client below sends < 126 bytes)
      const mask = f.subarray(2, 6);
      const text = Buffer.from(f.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
      sock.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
    });
  });
  server.listen(Number(ws), host);
} else if (cmd === 'tcp') {
  const s = net.connect({ host: a[0], port: Number(a[1]), allowHalfOpen: true }, () => s.end(a[2]));
  const got = [];
  s.on('data', (d) => got.push(d));
  s.on('end', () => (process.stdout.write(Buffer.concat(got).toString() + '\n'), process.exit(0)));
  s.on('error', (e) => die(`tcp: ${e.code || e.message}`));
} else if (cmd === 'udp') {
  const u = dgram.createSocket('udp4');
  u.on('message', (m) => (process.stdout.write(m.toString() + '\n'), process.exit(0)));
  u.send(Buffer.from(a[2]), Number(a[1]), a[0]);
  setTimeout(() => die('udp: no reply in 3 s'), 3000).unref();
} else if (cmd === 'ws') {
  const key = crypto.randomBytes(16).toString('base64');
  const req = http.request({
    host: a[0],
    port: Number(a[1]),
    headers: {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Key': key,
      'Sec-WebSocket-Version': '13',
    },
  });
  req.on('upgrade', (_res, sock) => {
    const text = Buffer.from(a[2]);
    const mask = crypto.randomBytes(4);
    sock.write(
      Buffer.concat([Buffer.from([0x81, 0x80 | text.length]), mask, text.map((b, i) => b ^ mask[i % 4])]),
    );
    sock.on(
      'data',
      (f) => (process.stdout.write(f.subarray(2, 2 + (f[1] & 0x7f)).toString() + '\n'), process.exit(0)),
    );
  });
  req.on('response', (res) => die(`ws: no upgrade, status ${res.statusCode}`));
  req.on('error', (e) => die(`ws: ${e.code || e.message}`));
  req.end();
} else if (cmd === 'probe') {
  const [dir, node, relay, to, host, port] = a;
  const t = require(path.join(__dirname, '../../packages/edgetunnel/dist'));
  const identity = t.loadIdentity(
    { cert: path.join(dir, `${node}.crt`), key: path.join(dir, `${node}.key`), ca: path.join(dir, 'ca.crt') },
    { role: 'node', name: node },
  );
  const agent = new t.TunnelAgent({ identity, relays: [relay], targets: { allows: () => false } });
  agent.start().then(async () => {
    for (let i = 0; i < 100 && agent.relaysUp().length === 0; i++)
      await new Promise((r) => setTimeout(r, 30));
    try {
      const s = await agent.open({ node: to }, host, Number(port));
      s.destroy();
      process.stdout.write('OPENED\n');
    } catch (e) {
      process.stdout.write(`${e.code}: ${e.message}\n`);
    }
    await agent.stop();
    process.exit(0);
  });
} else die(`unknown command ${cmd}`);

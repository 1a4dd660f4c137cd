// The peer: the same notifications sent by @parse/node-apn (token auth) to
// the same simulator, as an application would send one message to many
// devices: Provider.send(notification, tokens).  Prints one JSON line:
// wall time from send() to its settlement, how many APNs accepted (200)
// and how the others failed.
//   node peer-node-apn.js <port> <certs dir> <n> <payload bytes>
'use strict';
const apn = require('@parse/node-apn');
const crypto = require('crypto');
const { token } = require('./tokens');

const [port, certs, n, size] = process.argv.slice(2);
const tokens = Array.from({ length: Number(n) }, (_, i) => token(i));

const provider = new apn.Provider({
  token: {
    key: `${certs}/AuthKey_ABC123DEFG.p8`,
    keyId: 'ABC123DEFG',
    teamId: 'TEAM123456',
  },
  address: '127.0.0.1',
  port: Number(port),
  ca: `${certs}/ca.crt`,
  requestTimeout: 30000,
});

// the payload timpush renders for the same message, padded to its size
const note = new apn.Notification();
note.topic = 'com.example.chat';
note.pushType = 'alert';
note.priority = 10;
note.id = crypto.randomUUID();
note.sound = 'default';
note.badge = 1;
let alert = 'hi';
note.alert = alert;
while (note.length() < Number(size)) {
  alert += 'x';
  note.compiled = false;
  note.alert = alert;
}
note.compiled = false;
const bytes = note.length();

(async () => {
  const t0 = process.hrtime.bigint();
  const res = await provider.send(note, tokens);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const reasons = {};
  for (const f of res.failed) {
    const why = f.status ? `${f.status} ${f.response ? f.response.reason : ''}`
      : (f.error ? f.error.message : 'unknown');
    reasons[why] = (reasons[why] || 0) + 1;
  }
  console.log(JSON.stringify({
    secs, accepted: res.sent.length, failed: res.failed.length,
    payload: bytes, reasons,
  }));
  await provider.shutdown();
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });

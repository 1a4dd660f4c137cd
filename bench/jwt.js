// Prints an APNs provider token (ES256 JWT: kid, iss, iat) for h2load's
// "authorization: bearer" header, as timpush and node-apn make theirs.
//   node jwt.js AuthKey_KEYID.p8 KEYID TEAMID
'use strict';
const crypto = require('crypto');
const fs = require('fs');

const [keyFile, kid, iss] = process.argv.slice(2);
if (!keyFile || !kid || !iss) {
  console.error('usage: node jwt.js key.p8 key_id team_id');
  process.exit(2);
}
const b64 = (b) => Buffer.from(b).toString('base64url');
const head = b64(JSON.stringify({ alg: 'ES256', kid }));
const claims = b64(JSON.stringify({ iss, iat: Math.floor(Date.now() / 1000) }));
const sig = crypto.sign('sha256', Buffer.from(head + '.' + claims), {
  key: fs.readFileSync(keyFile),
  dsaEncoding: 'ieee-p1363',
});
process.stdout.write(head + '.' + claims + '.' + b64(sig) + '\n');

// Registers the benchmark's devices through timpush's own API (setAPNS):
// users u0..u<n-1>, one device each, plus the user "wrk" for the request
// rate test.  Tokens are those of tokens.js.  Keep-alive connections, a
// few in parallel; every answer must be 200.
//   node seed.js <api port> <n users> <business_id>
'use strict';
const http = require('http');
const { token } = require('./tokens');

const [port, n, bid] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const body = JSON.stringify({ business_id: bid });

function put(user, tok) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, agent, method: 'PUT',
      path: `/v1/users/${user}/devices/${tok}`,
      headers: { 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve()
        : reject(new Error(`PUT ${user}: ${res.statusCode} ${data}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

(async () => {
  const jobs = [['wrk', token(-1)]];
  for (let i = 0; i < n; i++) jobs.push([`u${i}`, token(i)]);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [u, t] = jobs[next++];
      await put(u, t);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  agent.destroy();
  console.log(`seeded ${jobs.length} devices`);
})().catch((e) => { console.error(e.message); process.exit(1); });

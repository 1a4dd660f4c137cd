// The benchmark's device tokens: 32 bytes, 64 hex digits, one per user
// index; index -1 is the "wrk" user's device.
'use strict';
exports.token = (i) => (i < 0 ? 'f'.repeat(64)
  : 'be' + i.toString(16).padStart(62, '0'));

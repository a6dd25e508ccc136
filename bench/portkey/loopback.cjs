// Preload (node -r) for the Portkey bench anchor: Portkey's start-server.js calls
// @hono/node-server's serve(), which listens on 0.0.0.0. This rewrites every TCP
// net.Server#listen to bind 127.0.0.1 instead, whatever host (or none) was asked for.
'use strict';
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function listen(...args) {
  const a0 = args[0];
  if (a0 !== null && typeof a0 === 'object' && !Array.isArray(a0)) {
    if (a0.path === undefined && a0.handle === undefined && a0.fd === undefined) {
      args[0] = { ...a0, host: '127.0.0.1' };
    }
  } else if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    // listen(port[, host][, backlog][, cb]): drop a given host, put ours in its place
    const rest = args.slice(1);
    if (typeof rest[0] === 'string') rest.shift();
    args = [Number(a0), '127.0.0.1', ...rest];
  }
  return orig.apply(this, args);
};

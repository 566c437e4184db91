// Preloaded into NNI's manager (node --require, through NODE_OPTIONS) by nni_safs.manager_host.
// NNI 3.0's REST server calls listen(port) with no host, which listens on every interface of
// the machine with no authentication. A listen() given only a port gets the host named by
// NNI_SAFS_LISTEN_HOST (127.0.0.1 unless set) instead; calls that name a host are untouched.
'use strict';
const net = require('net');
const host = process.env.NNI_SAFS_LISTEN_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]));
  if (portOnly && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, host);
  }
  return listen.apply(this, args);
};

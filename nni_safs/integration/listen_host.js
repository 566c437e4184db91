// Preloaded into NNI's manager (node --require, through NODE_OPTIONS) by nni_safs.manager_host.
// NNI 3.0's REST server calls listen(port) with no host, which listens on every interface of
// the machine with no authentication. A listen() given only a port gets the host named by
// NNI_SAFS_LISTEN_HOST (127.0.0.1 unless set) instead; calls that name a host are untouched.
// Only NNI's manager (nni_node/main.js) is changed: the preload reaches every Node program
// started from an environment where nni-safs is installed (nni_safs_loopback.pth).
'use strict';
const net = require('net');
const path = require('path');
const host = process.env.NNI_SAFS_LISTEN_HOST || '127.0.0.1';
const script = process.argv[1] || '';
const isNniManager = path.basename(script) === 'main.js' && path.basename(path.dirname(script)) === 'nni_node';
const listen = net.Server.prototype.listen;
if (isNniManager) net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]));
  if (portOnly && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, host);
  }
  return listen.apply(this, args);
};

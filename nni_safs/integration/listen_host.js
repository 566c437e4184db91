// Preloaded into NNI's manager (node --require, through NODE_OPTIONS) by nni_safs.manager_host.
// NNI 3.0's REST server calls listen(port) with no host, which listens on every interface of
// the machine with no authentication. Every listen() form Node documents that would listen on
// every interface gets the host named by NNI_SAFS_LISTEN_HOST (127.0.0.1 unless set):
// listen(), listen(cb), listen(port[, cb]), listen(port, backlog[, cb]) and listen({port}[, cb]);
// calls that name a host, a path or a handle are untouched. (The tuner checks the result.)
// Only NNI's manager (nni_node/main.js) is changed: the preload reaches every Node program
// started from an environment where nni-safs is installed (nni_safs_loopback.pth).
'use strict';
const net = require('net');
const path = require('path');
const host = process.env.NNI_SAFS_LISTEN_HOST || '127.0.0.1';
const script = process.argv[1] || '';
const isNniManager = path.basename(script) === 'main.js' && path.basename(path.dirname(script)) === 'nni_node';
const listen = net.Server.prototype.listen;
const isPort = (value) => typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
function withHost(args) {
  if (args.length === 0 || typeof args[0] === 'function') return [0, host, ...args];
  if (isPort(args[0]) && (args.length === 1 || typeof args[1] !== 'string')) return [args[0], host, ...args.slice(1)];
  const options = args[0];
  if (options && typeof options === 'object' && !('host' in options) && !('path' in options) &&
      !('fd' in options) && !('_handle' in options) && !('handle' in options)) {
    return [{ ...options, host }, ...args.slice(1)];
  }
  return args;
}
if (isNniManager) net.Server.prototype.listen = function (...args) {
  return listen.apply(this, withHost(args));
};
module.exports = { withHost };

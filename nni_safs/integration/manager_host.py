"""Where NNI's manager listens: loopback only unless asked otherwise.

NNI 3.0's manager serves the web portal and a REST API without authentication, and listens on
every interface (``app.listen(port)`` with no host): anyone who reaches the machine can cancel
trials, change limits and read logs. Without touching installed NNI files, a Node.js preload
(``listen_host.js``, passed with ``--require`` through ``NODE_OPTIONS``, which NNI's launcher
hands on to the manager) gives such a ``listen()`` a host: 127.0.0.1 by default.

``nnictl create`` typed by hand in the environment where nni-safs is installed gets the same
(:mod:`nni_safs_loopback`, run by the install's ``nni_safs_loopback.pth``); ``NNI_SAFS_EXPOSE=1``
opts out. Outside that environment, ``eval "$(python -m nni_safs.integration.manager_host)"`` sets it for
a shell.

Only loopback is offered besides NNI's own every-interface behaviour: NNI's dispatcher and
its REST clients reach the manager through localhost, so one other interface alone would cut
them off. Remote trial machines connect back to the manager too: ``remote_reach_problem`` says
when a config's machines could not.
"""
from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import sys
from typing import Any, Mapping

from nni_safs_loopback import LOOPBACK, manager_env  # what the environment's .pth runs: see there


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def remote_reach_problem(experiment: Mapping[str, Any], host: str | None) -> str | None:
    """Why the remote machines of an NNI experiment config could not reach a manager listening
    on ``host`` (None: every interface), or None.

    NNI 3.0's remote training service tells each machine to connect back to ``nniManagerIp``,
    and to ``localhost`` (the machine itself) when it is unset: the experiment would fail only
    once the workers start, with the reason deep in the manager's log.
    """
    services = experiment.get("trainingService") or []
    for service in services if isinstance(services, list) else [services]:  # a list: NNI's hybrid mode
        if not isinstance(service, Mapping) or service.get("platform") != "remote":
            continue
        ip = service.get("nniManagerIp") or experiment.get("nniManagerIp")  # the service's own wins
        hosts = [str(machine.get("host")) for machine in service.get("machineList") or []]
        elsewhere = [h for h in hosts if not _is_loopback(h)]
        if elsewhere and (ip is None or _is_loopback(ip)):
            told = "nniManagerIp is unset, so NNI 3.0 tells" if ip is None else f"nniManagerIp {ip} tells"
            return (f"{told} the remote machines ({', '.join(elsewhere)}) to connect back to themselves instead "
                    f"of the NNI manager: set nniManagerIp to this machine's address as they reach it")
        if ip is not None and not _is_loopback(ip) and host is not None and _is_loopback(host):
            return (f"remote machines connect back to the NNI manager at nniManagerIp {ip}, but it would listen "
                    f"on {host} only: add --expose (its REST API has no authentication: a trusted network only)")
    return None


def tunnel_hint(port: int) -> str:
    """The SSH command that reaches a loopback-only portal from another machine."""
    return f"ssh -N -L {port}:127.0.0.1:{port} {os.environ.get('USER', 'you')}@{socket.gethostname()}"


def main() -> int:
    """Print the shell exports that make an NNI manager started from this shell listen on loopback."""
    env = manager_env(LOOPBACK, {"NODE_OPTIONS": os.environ.get("NODE_OPTIONS", "")})
    for key in ("NODE_OPTIONS", "NNI_SAFS_LISTEN_HOST"):
        print(f"export {key}={shlex.quote(env[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

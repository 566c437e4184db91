"""Where an NNI manager started from this environment listens: loopback unless
``NNI_SAFS_EXPOSE=1`` (see :mod:`nni_safs.manager_host`).

A module of its own, beside the ``nni_safs`` package: ``nni_safs_loopback.pth``, which the
install puts into site-packages, runs :func:`default_to_loopback` at every start of this
environment's Python, so ``nnictl create`` typed by hand starts its manager with the preload.
It imports nothing of nni_safs, torch or nni, so a Python that runs an exported model without
nni_safs stays without it, and start-up stays cheap.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping  # imported by os already: no start-up cost, unlike typing

# the package sits beside this module; os.path, not pathlib, which the start-up would import for this alone
PRELOAD = os.path.join(os.path.dirname(os.path.realpath(__file__)), "nni_safs", "integration", "listen_host.js")
LOOPBACK = "127.0.0.1"
EXPOSE = "NNI_SAFS_EXPOSE"  # "1": NNI's own every-interface manager
_OUR_PRELOAD = re.compile(r'--require\s+"[^"]*listen_host\.js"')


def manager_env(host: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for starting an NNI manager that listens on ``host``.

    ``None`` keeps NNI's own behaviour (every interface), also for the Pythons it starts.
    """
    result = dict(os.environ if env is None else env)
    require = f'--require "{PRELOAD}"'
    # a preload of this or another environment (perhaps one deleted since: node then fails to start)
    options = _OUR_PRELOAD.sub("", result.get("NODE_OPTIONS", ""))
    if host is None:
        result["NODE_OPTIONS"] = " ".join(options.split())
        result.pop("NNI_SAFS_LISTEN_HOST", None)
        result[EXPOSE] = "1"
        return result
    if os.path.isfile(PRELOAD):  # a missing file would make every node fail; the tuner then refuses
        options = f"{options} {require}"
    result["NODE_OPTIONS"] = " ".join(options.split())
    result["NNI_SAFS_LISTEN_HOST"] = host
    result.pop(EXPOSE, None)
    return result


def default_to_loopback(env: MutableMapping[str, str] = os.environ) -> None:
    """Run by ``nni_safs_loopback.pth`` at every Python start-up in the environment: a manager
    started from it listens on loopback unless ``NNI_SAFS_EXPOSE=1``."""
    if env.get(EXPOSE) != "1":
        env.update(manager_env(LOOPBACK, env))

"""Trials started warm: a process that has imported torch forks one child per trial.

A LeNet-5 trial of the embedded default trains for a few seconds, but a fresh ``python -m
nni_safs.trial`` spends about two more starting the interpreter and importing torch, and the
experiment runs some sixty of them on two cores. So the first local trial of an experiment
starts a server in the background (this module) and runs cold; the server imports the trial
code once, trains a tiny net once (the first optimizer a process builds imports
``torch._dynamo``, about one more second: :func:`nni_safs.training.loop.warm_up`) and waits on a
Unix socket. Every later trial process is only a thin client: it connects, hands over its
standard output and error (the descriptors themselves), its arguments, environment and
working directory, and waits. The server forks a child that takes on all of these and runs
:func:`nni_safs.integration.trial.main` exactly as the trial would have (its own NNI channel, trial.log,
job lock and marker), then sends back the exit status, which the client exits with. So NNI and the portal see the same trial, only sooner.

What keeps it safe:

* a client killed by NNI (``nnictl stop``, a trial cancelled) closes its connection, and its
  child kills itself on seeing that; a child that dies makes its client exit 1; a client whose
  trial no child took on (the server was leaving) runs it cold;
* the socket lives in a directory only this user can enter, and the server serves only
  connections from its own user id;
* the server is keyed by everything that decides what code a trial runs (interpreter, import
  path, the nni_safs sources and their modification times, the environment variables read
  once at start-up), so an edited checkout or another virtual environment gets its own
  server; it leaves once no trial has run for ``IDLE_SECONDS``;
* the server never touches CUDA: its warm-up trains on the CPU with an optimizer whose step
  asks nothing of CUDA, and it checks, by forking a probe once, that a child can still
  initialise CUDA (:func:`nni_safs.borrowed.in_bad_fork` False); if one could not, it serves no
  trial and every trial runs cold. Each child initialises CUDA itself, if its trial uses it,
  under its own trial's ``CUDA_VISIBLE_DEVICES``;
* the server's own messages go to ``<socket>.log`` beside its socket; one that fails to start
  leaves ``<socket>.failed``, and trials start cold without starting another for
  ``RETRY_SECONDS``;
* on Linux, by default only trials of NNI's local training service use it (remote machines
  start trials cold), and only on a machine without an NVIDIA GPU (forked trials on CUDA have
  not been run on a GPU yet); ``NNI_SAFS_FORKSERVER=0`` in the trial's environment turns it
  off, ``1`` on for any trial (``python -m nni_safs.trial --params FILE`` run by hand too, and
  on a GPU machine).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from nni_safs.borrowed import in_bad_fork
from nni_safs.integration.trial_channel import launched_locally

IDLE_SECONDS = 120.0  # a server with no trial for this long exits
RETRY_SECONDS = 600.0  # after a server failed to start, trials start cold this long before one tries again
SWITCH_ENV = "NNI_SAFS_FORKSERVER"  # "0": trials start cold
TARGET = "nni_safs.integration.trial:main"  # what a child runs: a function (argv, started) -> exit status
PRELOAD = ("nni_safs.training.jobs",)  # imported by the server once: torch, the models, the training loop
WARM_UP = "nni_safs.training.loop:warm_up"  # run by the server once: what the first training of a process pays
_MAX_REQUEST = 1 << 20
_MAX_SOCKET_PATH = 108  # sun_path, with its terminating zero
_POLL_SECONDS = 5.0  # how often an idle server reaps its children and checks its idle time
_TAKEN = b"\x01"  # a child's first word: the trial is its from here on
_warm = False  # True in a server's child: this process's trial started warm
# read once when the server starts (by torch's OpenMP, the C library), so part of its key
_READ_AT_START = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED",
                  "PYTHONIOENCODING")


def socket_path(target: str = TARGET) -> Path:
    """This checkout's and interpreter's server address (see the module docstring)."""
    package = Path(__file__).resolve().parent
    newest = max(entry.stat().st_mtime_ns for entry in package.rglob("*.py"))
    settings = {name: os.environ.get(name) for name in _READ_AT_START}
    key = json.dumps([sys.executable, sys.path[1:], str(package), newest, target, settings])
    folder = Path(tempfile.gettempdir()) / f"nni_safs-forkserver-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()  # not a link's target: a link planted by another user is refused
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{folder} must be a directory of this user's, closed to others")
    path = folder / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".sock")
    if len(os.fsencode(path)) >= _MAX_SOCKET_PATH:
        raise OSError(f"{path} is too long for a Unix socket address")
    return path


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU (its device files), asked without touching CUDA."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def wanted() -> bool:
    """Whether this trial should start warm (see the module docstring); Linux only (it relies on
    SOCK_SEQPACKET Unix sockets and SO_PEERCRED). Off by default on a machine with a GPU: forked
    CUDA trials have not yet run on one (``benchmarks/gpu.py``); ``NNI_SAFS_FORKSERVER=1`` turns
    them on."""
    switch = os.environ.get(SWITCH_ENV, "")
    return sys.platform.startswith("linux") and (
        switch == "1" or (switch != "0" and launched_locally() and not gpu_present()))


def run_in_server(argv: list[str], started: float, target: str = TARGET) -> int | None:
    """Run this trial in a warm child and return its exit status; None when no child took it on
    (no server yet: one is then started for the trials after this one), so the caller runs cold."""
    try:
        path = socket_path(target)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None  # no private folder, or no such sockets here: every trial runs cold
    with client:
        try:
            client.connect(str(path))
        except OSError:
            _start_server(path, target)
            return None
        try:
            request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "started": started})
            sys.stdout.flush()
            sys.stderr.flush()
            socket.send_fds(client, [request.encode()], [sys.stdout.fileno(), sys.stderr.fileno()])
            if client.recv(16) != _TAKEN:
                return None  # the server left (idle, stopped) before a child took the trial on
        except OSError:
            return None
        try:
            reply = client.recv(16)
        except OSError:
            reply = b""
    if len(reply) != 4:
        print("nni_safs.integration.forkserver: the trial's process ended without an exit status (killed?)", file=sys.stderr)
        return 1
    return struct.unpack("i", reply)[0]


def started_warm() -> bool:
    """Whether this process runs a trial a server's child took on (else it started cold)."""
    return _warm


def _start_server(path: Path, target: str) -> None:
    failed = Path(f"{path}.failed")  # written by a server that could not start (see serve)
    try:
        if time.time() - failed.stat().st_mtime < RETRY_SECONDS:
            return
    except OSError:
        pass  # none failed
    try:
        with open(f"{path}.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "nni_safs.integration.forkserver", str(path), target],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True)
    except OSError:
        pass  # this trial runs cold anyway, and the next one tries again


def ready(target: str = TARGET) -> Callable:
    """Import and warm up what every trial needs (:data:`PRELOAD`, :data:`WARM_UP`), exactly as
    the server does before it forks; return the function a child runs."""
    for module in PRELOAD:
        importlib.import_module(module)
    _resolve(WARM_UP)()
    return _resolve(target)


def fork_is_clean() -> bool:
    """Whether a child forked now could still use CUDA (this process never initialised it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return True
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, b"1" if in_bad_fork() else b"0")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        poisoned = answer.read(1)
    os.waitpid(child, 0)
    return poisoned == b"0"


def serve(path: Path, target: str = TARGET, idle_seconds: float = IDLE_SECONDS) -> None:
    """Import ``target``, then fork a child per connection until idle (no trial running nor
    started for ``idle_seconds``); one server per ``path``."""
    import fcntl

    with open(f"{path}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another server holds this address
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")  # who serves (the lock file is the socket's name + .lock)
        lock.flush()
        path.unlink(missing_ok=True)  # a dead server's socket
        server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server.bind(str(path))
        pid = os.getpid()
        signal.signal(signal.SIGTERM, _leave)  # through the finally below: the socket goes with us
        try:
            try:
                function = ready(target)
                clean = fork_is_clean()
            except Exception as err:  # not SystemExit: a server stopped while it starts has not failed
                traceback.print_exc()  # into the log beside the socket
                Path(f"{path}.failed").write_text(f"{type(err).__name__}: {err}\n")
                return
            Path(f"{path}.failed").unlink(missing_ok=True)
            if not clean:
                print(f"nni_safs.integration.forkserver {pid}: CUDA was initialised before forking (a forked trial could "
                      "not use it): serving no trial, every trial runs cold", file=sys.stderr, flush=True)
            server.listen(16)
            server.settimeout(_POLL_SECONDS)
            children: set[int] = set()
            last_busy = time.monotonic()
            while children or time.monotonic() - last_busy < idle_seconds:
                try:
                    connection, _ = server.accept()
                except socket.timeout:
                    children -= _reaped()
                    if children:
                        last_busy = time.monotonic()
                    continue
                with connection:
                    if _peer_uid(connection) != os.getuid() or not clean:
                        continue  # closed unanswered: the client runs its trial cold
                    child = os.fork()
                    if child == 0:
                        try:
                            server.close()
                            signal.signal(signal.SIGTERM, signal.SIG_DFL)
                            lock.close()
                            _child(connection, function)
                        finally:
                            os._exit(1)  # _child never returns; nothing of the server's may run here
                children.add(child)
                children -= _reaped()
                last_busy = time.monotonic()
        finally:
            if os.getpid() == pid:
                path.unlink(missing_ok=True)


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _reaped() -> set[int]:
    done = set()
    while True:
        try:
            child, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if child == 0:
            return done
        done.add(child)


def _leave(number: int, frame: object) -> None:
    raise SystemExit(0)


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def _child(connection: socket.socket, function: Callable[[list[str], float], int]) -> None:
    """Become the client's trial: its output, environment and directory; never returns."""
    global _warm
    _warm = True
    status = 1
    try:
        connection.settimeout(None)
        message, fds, _, _ = socket.recv_fds(connection, _MAX_REQUEST, 2)
        if not message:
            os._exit(0)  # a connection that only checked the server is up
        connection.send(_TAKEN)
        request = json.loads(message)
        for fd, target in zip(fds, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        sys.argv = [sys.argv[0], *request["argv"]]
        if not sys.flags.safe_path:
            sys.path[0] = request["cwd"]  # as for ``python -m`` started there
        threading.Thread(target=_die_with_client, args=(connection,), daemon=True).start()
        print(f"nni_safs: warm start (forked by server {os.getppid()})", flush=True)
        status = function(request["argv"], request["started"])
    except SystemExit as exit:  # e.g. argparse refusing the arguments, as a cold trial would exit
        status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    except BaseException:  # noqa: BLE001  (the client must hear of anything)
        traceback.print_exc()
    finally:
        status = status if isinstance(status, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            connection.send(struct.pack("i", status))
        finally:
            os._exit(status)


def _die_with_client(connection: socket.socket) -> None:
    while connection.recv(16):
        pass
    os.kill(os.getpid(), signal.SIGKILL)  # the trial process is gone: NNI stopped it


if __name__ == "__main__":
    from nni_safs.integration import (
        forkserver,  # the module trials import (this one runs as __main__): it knows they are warm
    )

    forkserver.serve(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else TARGET)

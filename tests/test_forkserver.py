"""The warm trial server: a client's child gets its output, environment, directory and arguments,
its exit status comes back, and a killed client takes its child with it."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
TARGET = "forkserver_target:main"
CLIENT = f"""
import sys
from nni_safs.integration.forkserver import run_in_server, socket_path
if sys.argv[1] == "path":
    print(socket_path({TARGET!r}))
    sys.exit(0)
status = run_in_server(sys.argv[1:], 12.5, target={TARGET!r})
print("cold" if status is None else "warm", flush=True)
sys.exit(status or 0)
"""


def _client(*args: str, env: dict, cwd: Path, **kwargs):
    return subprocess.Popen([sys.executable, "-c", CLIENT, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _serving(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(str(path))  # the server forks a child that finds no request and leaves
        except OSError:
            return False
    return True


@pytest.fixture
def server(tmp_path):
    """A started server for TARGET (by a first, cold client); stopped afterwards."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "forkserver_target"),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])]),
           "FORKSERVER_TEST": "from the client", "CUDA_VISIBLE_DEVICES": "3"}
    path = Path(_client("path", env=env, cwd=tmp_path).communicate()[0].strip())
    out, _ = _client("echo", env=env, cwd=tmp_path).communicate(timeout=60)
    assert out.strip().splitlines()[-1] == "cold"  # the first one starts the server and runs cold
    deadline = time.time() + 60
    while not _serving(path) and time.time() < deadline:
        time.sleep(0.1)
    assert _serving(path), "the server did not come up"
    yield env, tmp_path
    server_process = psutil.Process(int(Path(f"{path}.lock").read_text()))
    server_process.send_signal(signal.SIGTERM)
    server_process.wait(timeout=10)
    assert not path.exists(), "a stopped server leaves no socket behind"


def test_a_warm_child_becomes_its_client(server):
    env, cwd = server
    client = _client("echo", "x y", env={**env, "CUDA_VISIBLE_DEVICES": "7"}, cwd=cwd)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 3, err  # the child's exit status
    lines = out.strip().splitlines()
    assert lines[0].startswith("nni_safs: warm start (forked by server") and lines[-1] == "warm"
    seen = json.loads(lines[1])
    assert seen["pid"] != client.pid and seen["cwd"] == str(cwd) and seen["env"] == "from the client"
    assert seen["argv"] == seen["sys_argv"] == ["echo", "x y"] and seen["started"] == 12.5
    assert seen["torch"], "the server preloads the job code (and torch)"
    assert seen["dynamo"], "and has built an optimizer once (which imports torch._dynamo)"
    assert seen["warm"] and not seen["bad_fork"], "a warm child can still initialise CUDA"
    assert seen["cuda_visible"] == "7", "under its own trial's CUDA_VISIBLE_DEVICES, not the server's"
    assert "to stderr" in err


def test_a_killed_client_takes_its_child_with_it(server, tmp_path):
    env, cwd = server
    pid_file = tmp_path / "child.pid"
    client = _client("sleep", str(pid_file), env=env, cwd=cwd)
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    child = psutil.Process(int(pid_file.read_text()))
    client.kill()  # as NNI stops a trial
    client.wait()
    child.wait(timeout=10)  # raises TimeoutExpired if the child outlived its client


def test_a_child_that_dies_fails_its_client(server):
    env, cwd = server
    client = _client("die", env=env, cwd=cwd)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 1 and "ended without an exit status" in err


@pytest.mark.parametrize("switch, channel, warm", [("", "http://127.0.0.1:9/env/1/trial", True),  # local
                                                   ("", "ws://127.0.0.1:9/x", False),  # remote
                                                   ("", "", False),  # by hand
                                                   ("1", "", True), ("0", "http://127.0.0.1:9/env/1/trial", False)])
def test_who_starts_warm(switch, channel, warm):
    env = {**os.environ, "NNI_SAFS_FORKSERVER": switch, "NNI_TRIAL_COMMAND_CHANNEL": channel}
    out = subprocess.run([sys.executable, "-c", "import nni_safs.integration.forkserver as f; print(f.wanted())"], env=env,
                         capture_output=True, text=True)
    assert out.stdout.strip() == str(warm), out.stderr


def test_a_child_exits_with_the_status_the_trial_exits_with(server):
    env, cwd = server
    client = _client("exit", "2", env=env, cwd=cwd)
    client.communicate(timeout=60)
    assert client.returncode == 2


def test_a_trial_no_child_took_on_runs_cold(monkeypatch):
    """A server that closes a connection before forking (leaving: idle, stopped) costs nothing."""
    from nni_safs.integration import forkserver
    short = tempfile.mkdtemp(prefix="fs-")  # a socket's address must stay under 108 bytes
    monkeypatch.setattr(forkserver.tempfile, "gettempdir", lambda: short)
    path = forkserver.socket_path(TARGET)
    leaving = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leaving.bind(str(path))
    leaving.listen(1)

    def close_at_once():
        connection, _ = leaving.accept()
        connection.recv(1 << 16)
        connection.close()
    thread = threading.Thread(target=close_at_once)
    thread.start()
    assert forkserver.run_in_server(["echo"], 0.0, target=TARGET) is None
    thread.join(timeout=10)
    leaving.close()
    shutil.rmtree(short)


def test_a_server_stays_while_a_trial_runs_and_leaves_when_idle(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE / "forkserver_target"),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])])}
    path = tmp_path / "s.sock"
    server = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from nni_safs.integration.forkserver import serve; "
                               f"serve(Path(sys.argv[1]), {TARGET!r}, idle_seconds=1.0)", str(path)], env=env)
    deadline = time.time() + 60
    while not _serving(path) and time.time() < deadline:
        time.sleep(0.1)
    from nni_safs.integration import forkserver
    pid_file = tmp_path / "child.pid"
    client = subprocess.Popen([sys.executable, "-c", "from pathlib import Path; import nni_safs.integration.forkserver as f; "
                               f"f.socket_path = lambda target: Path({str(path)!r}); "
                               f"f.run_in_server(['sleep', {str(pid_file)!r}], 0.0, target={TARGET!r})"], env=env)
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(forkserver._POLL_SECONDS + 2)  # past its idle time, with a trial running
    assert server.poll() is None, "the server left while its trial ran"
    client.kill()
    server.wait(timeout=2 * forkserver._POLL_SECONDS + 10)  # then it leaves, and its socket with it
    assert not path.exists()


SERVER_START = """
import json, os, sys, torch
calls = []
count = torch._C._cuda_getDeviceCount
def counted():
    calls.append(1)
    return count()
torch._C._cuda_getDeviceCount = counted  # what initialises the CUDA driver and poisons fork
from nni_safs.integration import forkserver
forkserver.ready()  # the preload and warm-up, exactly as the server runs them
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.write(write, json.dumps(torch.cuda._is_in_bad_fork()).encode())
    os._exit(0)
os.close(write)
os.waitpid(child, 0)
print(json.dumps({"calls": len(calls), "bad_fork": json.loads(os.read(read, 16)),
                  "clean": forkserver.fork_is_clean()}))
torch.cuda.is_available()  # what the warm-up once did in Adam's step
print(json.dumps(forkserver.fork_is_clean()))
"""


def test_the_server_never_touches_cuda_before_it_forks():
    """A child forked after the server's preload and warm-up can initialise CUDA (on a GPU its
    trial would otherwise fail at its first CUDA call); the check the server makes sees it."""
    run = subprocess.run([sys.executable, "-c", SERVER_START], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    first, after_cuda = run.stdout.strip().splitlines()[-2:]
    assert json.loads(first) == {"calls": 0, "bad_fork": False, "clean": True}
    assert json.loads(after_cuda) is False, "once CUDA was asked for, a fork is poisoned and the server sees it"


def test_a_server_that_fails_to_start_is_not_started_again_by_every_trial(tmp_path):
    """Its traceback goes to the log beside its socket; trials then start cold without trying again."""
    short = Path(tempfile.mkdtemp(prefix="fs-"))  # a socket's address must stay under 108 bytes
    client = ("import sys, tempfile; tempfile.gettempdir = lambda: sys.argv[1]; "
              "from nni_safs.integration.forkserver import run_in_server, socket_path; "
              "print(socket_path('no_such_module:main')); "
              "print(run_in_server(['echo'], 0.0, target='no_such_module:main'))")
    try:
        first = subprocess.run([sys.executable, "-c", client, str(short)], capture_output=True, text=True, timeout=60)
        path, status = first.stdout.split()
        assert status == "None"  # cold
        failed, log = Path(f"{path}.failed"), Path(f"{path}.log")
        deadline = time.time() + 60
        while not failed.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert "ModuleNotFoundError: No module named 'no_such_module'" in failed.read_text()
        time.sleep(1)  # the failed server has left
        assert "Traceback" in log.read_text()
        for _ in range(3):
            again = subprocess.run([sys.executable, "-c", client, str(short)], capture_output=True, text=True,
                                   timeout=60)
            assert again.stdout.split()[1] == "None"
        time.sleep(2)
        assert log.read_text().count("Traceback") == 1, "a trial started another server"
    finally:
        shutil.rmtree(short)


def test_the_socket_folder_may_not_be_a_link(tmp_path, monkeypatch):
    """A link in the shared temporary folder (planted by anyone) is not followed."""
    from nni_safs.integration import forkserver
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / f"nni_safs-forkserver-{os.getuid()}").symlink_to(real)
    monkeypatch.setattr(forkserver.tempfile, "gettempdir", lambda: str(tmp_path))
    with pytest.raises(PermissionError, match="must be a directory of this user's"):
        forkserver.socket_path(TARGET)
    assert forkserver.run_in_server(["echo"], 0.0, target=TARGET) is None  # the trial runs cold


def test_warm_trials_are_off_by_default_on_a_gpu_machine(monkeypatch):
    """Forked CUDA trials have not run on a GPU yet: a GPU machine starts trials cold unless asked."""
    from nni_safs.integration import forkserver
    from nni_safs.integration.trial_channel import CHANNEL_ENV
    monkeypatch.setenv(CHANNEL_ENV, "http://127.0.0.1:1/")  # NNI's local training service
    monkeypatch.delenv(forkserver.SWITCH_ENV, raising=False)
    monkeypatch.setattr(forkserver, "gpu_present", lambda: False)
    assert forkserver.wanted()
    monkeypatch.setattr(forkserver, "gpu_present", lambda: True)
    assert not forkserver.wanted()
    monkeypatch.setenv(forkserver.SWITCH_ENV, "1")
    assert forkserver.wanted()

"""What several test files share: small configs, scripted results, a driver, a free port, a finished run."""
import contextlib
import io
import json
import random
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from nni_safs.method.contract import JobResult

# budgets for the stage machine alone (no training)
SMALL = dict(model="lenet5", dataset="mnist5k", search_steps=4, max_search_steps=6, hpo_trials=3)
# the embedded default with budgets a real run finishes in a minute (safs run, nnictl)
TINY = dict(model="lenet5", dataset="mnist5k", device="cpu", threads=1, scope="lamp", batch_size=256,
            dense_epochs=4, baseline_epochs=2, final_epochs=2, search_epochs=1, search_data_fraction=0.3,
            search_steps=3, max_search_steps=4, hpo_trials=2, hpo_epochs=1)
DEFAULT = Path(__file__).resolve().parents[1] / "experiment_configs" / "lenet5_mnist_safs.yml"


def run_args(workspace: Path, **settings: Any) -> list[str]:
    """`safs run` on the embedded default, shrunk to TINY budgets with --set (``settings`` on top)."""
    settings = {**TINY, "search_init": "random", "final_seeds": 1, "workspace": str(workspace), **settings}
    return ["run", str(DEFAULT), "--quiet", *(f"--set={key}={value}" for key, value in settings.items())]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A real finished `safs run` (TINY budgets, seed 0, LAHC), shared by the files that read a
    workspace; what its progress printed (not a terminal) is in ``../progress.log``."""
    from nni_safs.cli import main
    workspace = tmp_path_factory.mktemp("cli") / "ws"
    with contextlib.redirect_stderr(io.StringIO()) as progress:
        assert main([arg for arg in run_args(workspace) if arg != "--quiet"]) == 0
    (workspace.parent / "progress.log").write_text(progress.getvalue())
    return workspace


def fake_result(job, rng: random.Random) -> JobResult:
    """A plausible result: genomes with more 'swish' score higher, so the search has a signal."""
    genome = job.params["genome"]
    score = 50 + 5 * genome.count("swish") + rng.random()
    return JobResult.from_dict({"default": score, "val_acc": score, "test_acc": score - 1, "density": 0.01},
                               job.spec)


def drive(pipeline, concurrency: int, rng: random.Random, shuffle: bool = True) -> list:
    """Keep `concurrency` jobs in flight, finishing them in random order, like NNI would."""
    running, log = [], []
    while not pipeline.finished:
        while len(running) < concurrency:
            job = pipeline.ask()
            if job is None:
                break
            running.append(job)
            log.append(job)
        assert running, "deadlock: nothing running and nothing to ask"
        done = running.pop(rng.randrange(len(running)) if shuffle else 0)
        pipeline.tell(done.id, fake_result(done, rng))
    return log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



class JsonHandler(BaseHTTPRequestHandler):
    """A fake server's request handler: JSON in, JSON (or a bare status) out, no logging."""

    def reply(self, body: Any = None, status: int = 200) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(handler: type[JsonHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()

"""What tests/test_forkserver.py's warm children run (a stand-in for nni_safs.integration.trial.main)."""
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str], started: float) -> int:
    mode = argv[0]
    if mode == "echo":
        print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("FORKSERVER_TEST"),
                          "argv": argv, "sys_argv": sys.argv[1:], "started": started,
                          "torch": "torch" in sys.modules, "dynamo": "torch._dynamo" in sys.modules,
                          "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "bad_fork": sys.modules["torch"].cuda._is_in_bad_fork(),
                          "warm": sys.modules["nni_safs.integration.forkserver"].started_warm()}))
        print("to stderr", file=sys.stderr)
        return 3
    if mode == "sleep":
        Path(argv[1]).write_text(str(os.getpid()))
        time.sleep(60)
        return 0
    if mode == "die":
        os.kill(os.getpid(), 9)
    if mode == "exit":  # as argparse refusing the arguments
        sys.exit(int(argv[1]))
    raise ValueError(f"unknown mode {mode!r}")

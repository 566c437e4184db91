"""Progress of safs run / safs experiment: one redrawn line on a terminal, plain lines elsewhere."""
import fcntl
import io
import json
import os
import re
import select
import struct
import termios
import time

from nni_safs.cli import _show_trials
from nni_safs.progress import ProgressLine


def test_off_a_terminal_a_line_is_printed_only_when_it_changes():
    out = io.StringIO()
    line = ProgressLine("jobs", out)
    line.update(0, 9, "SAFS prepare", exact=False)
    line.update(0, 9, "SAFS prepare", exact=False, live="epoch 1/4")  # live detail: not a change
    line.update(1, 7, "SAFS baseline")
    line.close()
    printed = out.getvalue().splitlines()
    assert [re.sub(r" \[[0-9:]+\]$", "", p) for p in printed] == [
        "SAFS prepare: 0 of at most 9 jobs", "SAFS baseline: 1 of 7 jobs"]
    assert all(re.search(r" \[\d\d:\d\d\]$", p) for p in printed)  # elapsed time


def read_until(fd: int, text: str, seconds: float = 10.0) -> str:
    """What the terminal's other end has received once ``text`` arrived (the kernel hands pty
    output over in pieces, so one read may see only the first redraw)."""
    received, deadline = "", time.monotonic() + seconds
    while text not in received and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            received += os.read(fd, 65536).decode()
    return received


def test_on_a_terminal_one_line_is_redrawn_with_the_live_detail():
    main, other = os.openpty()
    fcntl.ioctl(other, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160-column terminal
    with os.fdopen(other, "w") as terminal:
        assert terminal.isatty()
        line = ProgressLine("jobs", terminal)
        line.update(0, 9, "SAFS prepare", exact=False, live="epoch 1/4, val 12.00%")
        line.update(1, 9, "SAFS baseline", exact=False, live="epoch 2/2, val 70.00%")
        terminal.flush()
        drawn = read_until(main, "val 70.00%")
        line.close()
    os.close(main)
    assert "\n" not in drawn and drawn.count("\r") >= 2  # redrawn in place
    assert "SAFS baseline: 1 of at most 9 jobs, epoch 2/2, val 70.00%" in drawn


def trial(number: int, status: str, stage: str) -> dict:
    """A /trial-jobs record as NNI 3.0's manager returns it."""
    record = {"parameter_id": number, "parameter_source": "algorithm", "parameters": {"stage": stage, "job": number}}
    return {"trialJobId": f"T{number}", "status": status, "startTime": 1000 + number,
            "hyperParameters": [json.dumps(record)]}


def test_an_experiments_line_names_the_newest_trials_stage_and_whether_the_total_is_known():
    out = io.StringIO()
    line = ProgressLine("trials", out)
    trials = [trial(0, "SUCCEEDED", "prepare"), trial(1, "SUCCEEDED", "baseline"), trial(2, "RUNNING", "search")]
    _show_trials(line, "RUNNING", trials, most=80, configured=80)
    _show_trials(line, "RUNNING", [*trials[:2], trial(2, "SUCCEEDED", "search")], most=64, configured=80)
    _show_trials(line, "RUNNING", [], most=80, configured=80)
    printed = [re.sub(r" \[[0-9:]+\]$", "", p) for p in out.getvalue().splitlines()]
    assert printed == ["[RUNNING] search: 2 of at most 80 trials, 2 succeeded, 1 running",
                       "[RUNNING] search: 3 of 64 trials, 3 succeeded",  # the tuner set maxTrialNumber: exact
                       "[RUNNING] starting: 0 of at most 80 trials"]

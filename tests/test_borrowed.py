"""One test per private NNI/torch name we rely on (nni_safs/borrowed.py): each fails if the hook
stops behaving as the code using it expects."""
import json
import threading
import time

import pytest
from torch import nn

from nni_safs import borrowed


def test_parameter_ids_come_from_the_dispatchers_own_counter():
    from nni.runtime import msg_dispatcher
    first, second = borrowed.new_parameter_id(), borrowed.new_parameter_id()
    assert second == first + 1
    assert msg_dispatcher._create_parameter_id() == second + 1  # one counter, shared with NNI


def test_sends_through_the_dispatcher_are_serialized():
    from nni.runtime.msg_dispatcher import MsgDispatcher
    from nni.runtime.tuner_command_channel import CommandType
    from nni.tuner import Tuner

    class Idle(Tuner):
        def update_search_space(self, search_space):
            pass
    dispatcher = MsgDispatcher("ws://_unittest_placeholder_", Idle())
    inside, overlaps, sent = [0], [], []

    def slow_send(command, data):
        inside[0] += 1
        overlaps.extend([command] if inside[0] > 1 else [])
        time.sleep(0.01)
        sent.append(command)
        inside[0] -= 1
    dispatcher.send = slow_send
    borrowed.serialize_sends(dispatcher.send_trial_callback)
    borrowed.serialize_sends(dispatcher.send_trial_callback)  # idempotent
    threads = [threading.Thread(target=dispatcher.send_trial_callback, args=(i, {"x": i})) for i in range(4)]
    threads += [threading.Thread(target=dispatcher.send, args=(CommandType.NoMoreTrialJobs, ""))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sent) == 5 and not overlaps


def test_builtin_tuner_names_list_nnis_tuners():
    names = borrowed.builtin_tuner_names()
    assert {"tpe", "random", "evolution", "gridsearch"} <= set(names)


def test_a_trials_parameter_id_is_read_from_its_record():
    import nni.trial
    before = getattr(nni.trial, "_params", None)
    try:
        nni.trial._params = {"parameter_id": 17, "parameters": {}}
        assert borrowed.trial_parameter_id(nni.trial) == 17
        nni.trial._params = None
        assert borrowed.trial_parameter_id(nni.trial) is None
    finally:
        nni.trial._params = before


def test_the_manager_address_is_read_from_the_tuner_channel():
    assert borrowed.manager_address("ws://localhost:8080/tuner") == (8080, None)
    assert borrowed.manager_address("ws://localhost:8081/my/prefix/tuner") == (8081, "my/prefix")
    assert borrowed.manager_address(None) == (None, None)
    with pytest.raises(borrowed.BorrowedInsideError, match="manager_address.*unexpected tuner channel URL"):
        borrowed.manager_address("http://localhost:8080/other")


def test_recorded_parameters_are_read_from_a_trial_record():
    record = {"hyperParameters": [json.dumps({"parameter_id": 3, "parameters": {"job": 4}})]}
    assert borrowed.recorded_parameters(record) == {"job": 4}
    assert borrowed.recorded_parameters({"hyperParameters": []}) is None
    with pytest.raises(borrowed.BorrowedInsideError, match="recorded_parameters"):
        borrowed.recorded_parameters({"hyperParameters": ["not json"]})


def test_nni_prunes_the_op_types_we_ask_for():
    assert {"Conv2d", "Linear"} <= borrowed.prunable_op_types()


def test_lamp_overrides_a_step_nni_s_level_pruner_still_calls():
    from nni.compression.pruning import LevelPruner

    from nni_safs.pruning.lamp import LAMPPruner
    borrowed.check_level_pruner_step()
    calls = []
    real = LAMPPruner._calculate_metrics

    def spy(self, data):
        calls.append(1)
        return real(self, data)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    LAMPPruner._calculate_metrics = spy
    try:
        LAMPPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5}]).compress()
    finally:
        LAMPPruner._calculate_metrics = real
    assert calls and issubclass(LAMPPruner, LevelPruner)


def test_a_clean_fork_is_not_in_torchs_bad_fork_state():
    """What the warm-trial server checks before it serves: a child forked from a process that
    never touched CUDA can still use it (a fresh process: this one may have asked CUDA already)."""
    import subprocess
    import sys
    probe = ("import os, torch; from nni_safs import borrowed; assert borrowed.in_bad_fork() is False; "
             "r, w = os.pipe(); pid = os.fork()\n"
             "if pid == 0:\n    os.write(w, b'1' if borrowed.in_bad_fork() else b'0'); os._exit(0)\n"
             "os.close(w); print(os.read(r, 1).decode()); os.waitpid(pid, 0)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stdout + out.stderr


def test_versions_other_than_the_checked_ones_are_named():
    assert borrowed.unchecked_versions() == []  # this environment is what the hooks were checked with

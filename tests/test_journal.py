"""The state journal: a snapshot plus appended changes, read back exactly, crash or not."""
import json
import os
import random

import pytest
from conftest import SMALL, fake_result

from nni_safs.integration.pipelines import build_pipeline
from nni_safs.method.state import LogView, assemble
from nni_safs.settings.config import SafsConfig
from nni_safs.storage.journal import CorruptStateError, Journal


def grow(journal, steps, head, logs):
    for step in range(steps):
        head["step"] = step
        logs["a.items"].append({"n": step})
        if step % 3 == 0:
            logs["b"].append(step)
        journal.save(head, {name: LogView(items) for name, items in logs.items()})


def test_a_saved_state_reads_back_exactly_and_saving_continues_after_a_load(tmp_path):
    head, logs = {"step": 0, "a": {"fixed": 1}}, {"a.items": [], "b": []}
    journal = Journal(tmp_path / "state.json")
    assert journal.load() is None
    grow(journal, 10, head, logs)
    assert journal.journal_path.is_file()  # changes were appended, not rewritten
    assert Journal.read(tmp_path / "state.json") == assemble(head, logs)
    journal.close()
    again = Journal(tmp_path / "state.json")
    again.load()
    grow(again, 5, head, logs)  # a resumed run appends after what it read
    assert Journal.read(tmp_path / "state.json") == assemble(head, logs)
    assert assemble(head, logs)["a"] == {"fixed": 1, "items": [{"n": i} for i in range(10)] + [{"n": i} for i in range(5)]}


def test_the_journal_is_folded_into_the_snapshot_once_it_outgrows_it(tmp_path):
    head, logs = {"pad": "x" * 5000, "a": {}}, {"a.items": [], "b": []}
    journal = Journal(tmp_path / "state.json")
    sizes = []
    for _ in range(40):
        grow(journal, 1, head, logs)
        sizes.append(journal.journal_path.stat().st_size if journal.journal_path.exists() else 0)
    assert 0 in sizes[1:], "never compacted"
    assert max(sizes) <= max(tmp_path.joinpath("state.json").stat().st_size, 1 << 16) + 6000
    assert Journal.read(tmp_path / "state.json") == assemble(head, logs)


def test_a_torn_last_line_is_the_save_that_never_completed(tmp_path):
    head, logs = {"step": 0, "a": {}}, {"a.items": [], "b": []}
    journal = Journal(tmp_path / "state.json")
    grow(journal, 4, head, logs)
    complete = assemble(head, logs)
    with open(journal.journal_path, "ab") as handle:  # a crash in the middle of the fifth save
        handle.write(b'{"seq": 99, "head": {"st')
    journal.close()
    again = Journal(tmp_path / "state.json")
    assert again.load() == complete
    grow(again, 2, head, logs)  # the torn bytes were cut: later lines stay readable
    assert Journal.read(tmp_path / "state.json") == assemble(head, logs)


def test_lines_already_in_the_snapshot_are_not_applied_twice(tmp_path):
    head, logs = {"step": 0, "a": {}}, {"a.items": [], "b": []}
    journal = Journal(tmp_path / "state.json")
    grow(journal, 5, head, logs)
    stale = journal.journal_path.read_bytes()
    logs["b"].clear()  # a log that shrank is saved as a new snapshot
    grow(journal, 1, head, logs)
    assert not journal.journal_path.exists()
    journal.journal_path.write_bytes(stale)  # as if the tool died before removing the old journal
    assert Journal.read(tmp_path / "state.json") == assemble(head, logs)


def test_a_damaged_state_is_refused_by_name(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(CorruptStateError, match="state.json"):
        Journal.read(tmp_path / "state.json")
    ok = Journal(tmp_path / "ok.json")
    ok.save({"a": {}}, {"a.x": [1]})
    ok.save({"a": {}}, {"a.x": [1, 2]})
    ok.close()
    path = tmp_path / "ok.json.journal"
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(CorruptStateError, match="line 1"):
        Journal.read(tmp_path / "ok.json")


def test_a_pipeline_reloaded_from_its_journal_at_every_step_continues_as_one_never_stopped(tmp_path):
    config = SafsConfig(**SMALL, workspace=str(tmp_path))

    def run(reload: bool):
        pipeline = build_pipeline(config)
        journal = Journal(tmp_path / f"state-{reload}.json")
        order, running, issued = random.Random(0), [], []
        while not pipeline.finished:
            job = pipeline.ask() if len(running) < 2 else None
            if job is None:
                done = running.pop(order.randrange(len(running)))
                pipeline.tell(done.id, fake_result(done, random.Random(done.id)))
            else:
                running.append(job)
                issued.append((job.stage, job.variant, job.params["genome"]))
            journal.save(pipeline.state_head(), pipeline.state_logs())
            if reload:  # a restart after every change
                state = Journal.read(journal.path)
                assert state == json.loads(json.dumps(pipeline.state_dict()))
                pipeline = pipeline.restored(state)
                running = [pipeline.jobs[job.id] for job in running]
        return issued, pipeline

    (never, original), (always, reloaded) = run(False), run(True)
    # LAHC and the stage flow are exact; a stage-2 study's inner NNI tuner is rebuilt from its
    # history on a reload, so only its suggestions (the hparams) may differ
    assert always == never and len(never) >= 15
    assert reloaded.search.best == original.search.best and reloaded.search.trace == original.search.trace


def test_one_writer_at_a_time_locked_before_it_reads(tmp_path):
    """A second writer is refused at once, by the holder's pid, before it reads anything."""
    import subprocess
    import sys

    from nni_safs.storage import journal as journal_module
    first = Journal(tmp_path / "state.json")
    first.save({"a": {}}, {"a.x": [1]})
    other = subprocess.run([sys.executable, "-c", "import sys, nni_safs.storage.journal as j; "
                            "j.Journal(sys.argv[1]).load()", str(tmp_path / "state.json")],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode != 0 and f"written by another process (pid {os.getpid()})" in other.stderr
    with pytest.raises(journal_module.StateLockedError, match="state.json is written by another process"):
        Journal(tmp_path / "state.json")  # opening is refused, not the first save after a read
    assert Journal.read(tmp_path / "state.json") == {"a": {"x": [1]}}  # a reader does not need it
    first.close()
    second = Journal(tmp_path / "state.json")  # the first gave it up
    second.load()
    second.save({"a": {}}, {"a.x": [1, 2]})
    assert Journal.read(tmp_path / "state.json") == {"a": {"x": [1, 2]}}


def test_a_waiting_writer_gets_the_state_once_the_holder_lets_go(tmp_path):
    import threading
    first = Journal(tmp_path / "state.json")
    threading.Timer(0.3, first.close).start()
    second = Journal(tmp_path / "state.json", wait=10)
    second.save({"a": {}}, {"a.x": [3]})
    assert Journal.read(tmp_path / "state.json") == {"a": {"x": [3]}}

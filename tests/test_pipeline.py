"""The stage machine and the NNI tuner adapter, driven with scripted results (no training)."""
import json
import random

import pytest
from conftest import SMALL, drive, fake_result

from nni_safs.integration.pipelines import build_pipeline
from nni_safs.integration.tuner import SafsTuner
from nni_safs.method.contract import STAGE_KEYS, JobResult, JobSpec, Stage, Status
from nni_safs.method.genomes import genome_to_string
from nni_safs.method.pipeline import FINAL_VARIANTS, SafsPipeline
from nni_safs.reports.results import build_summary, format_table
from nni_safs.settings.config import SafsConfig


@pytest.mark.parametrize("concurrency", [1, 2, 5])
@pytest.mark.parametrize("algorithm", ["lahc", "random", "tpe", "evolution"])
def test_pipeline_completes_without_deadlock(tmp_path, concurrency, algorithm):
    config = SafsConfig(**SMALL, search_algorithm=algorithm, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, concurrency, random.Random(concurrency))
    stages = [j.stage for j in jobs]
    assert stages[0] == "prepare" and stages.count("prepare") == 1
    assert stages.count("baseline") == 1
    assert stages.count("hpo") == 2 * config.hpo_trials
    assert sorted(j.variant for j in jobs if j.stage == "final") == sorted(FINAL_VARIANTS)
    assert pipeline.total_if_known() == len(jobs)
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) + pipeline.reused <= high
    # every job after prepare started only once prepare had a result (the barrier)
    safs_hpo = [j for j in jobs if j.stage == "hpo" and j.variant == "safs"]
    best_genome, _ = pipeline.search.best
    assert all(j.params["genome"] and j.params["train_scales"] for j in safs_hpo)
    final = {j.variant: j for j in jobs if j.stage == "final"}
    assert final["stage2"].params["genome"] == ""  # the ReLU ablation
    assert final["stage1"].params["train_scales"] is False
    assert final["safs"].params["train_scales"] is True
    assert "optimizer" in final["safs"].params["hparams"]


def test_prepare_is_a_barrier_and_its_failure_stops_everything(tmp_path):
    pipeline = build_pipeline(SafsConfig(**SMALL, workspace=str(tmp_path)))
    first = pipeline.ask()
    assert first.stage == "prepare"
    assert pipeline.ask() is None and not pipeline.finished
    pipeline.tell(first.id, JobResult.failed(first.spec, "RuntimeError: disk full"))
    assert pipeline.finished and "disk full" in pipeline.failure
    assert pipeline.ask() is None
    assert pipeline.total_if_known() == 1


def test_the_order_in_which_a_batch_of_results_arrives_changes_nothing(tmp_path):
    """NNI delivers the results of concurrent trials in any order; LAHC folds them in ask order,
    so whatever the arrival order within each batch, the run is the same."""
    def run(arrival_seed):
        pipeline = build_pipeline(SafsConfig(**SMALL, workspace=str(tmp_path)))
        arrival, issued, running = random.Random(arrival_seed), [], []
        while not pipeline.finished:
            while len(running) < 3 and (job := pipeline.ask()) is not None:
                running.append(job)
                issued.append((job.stage, job.variant, job.params["genome"], json.dumps(job.params["hparams"])))
            arrival.shuffle(running)
            for job in running:  # the whole batch, in this run's order
                pipeline.tell(job.id, fake_result(job, random.Random(job.id)))
            running = []
        return issued, pipeline.search.trace

    first, second = run(1), run(2)
    assert first == second and len(first[0]) >= 15


def test_state_roundtrip_mid_search(tmp_path):
    config = SafsConfig(**SMALL, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng = random.Random(0)
    in_flight = []
    for _ in range(6):
        job = pipeline.ask()
        if job is None:
            pipeline.tell(in_flight[0].id, fake_result(in_flight.pop(0), rng))
            continue
        in_flight.append(job)
    state = json.loads(json.dumps(pipeline.state_dict()))
    restored = pipeline.restored(state)
    assert restored.jobs.keys() == pipeline.jobs.keys()
    assert restored.results.keys() == pipeline.results.keys()
    for job in in_flight:  # results of jobs in flight before the restart are still accepted
        restored.tell(job.id, fake_result(job, rng))
    drive(restored, 2, rng)
    assert restored.finished and not restored.failure


class FakeNni:
    """Records what ``tuner`` sends through NNI's st_callback (once its sender thread has sent it)."""

    def __init__(self, tuner):
        self.tuner = tuner
        self._sent = []

    @property
    def sent(self):
        self.tuner.flush()
        return self._sent

    def __call__(self, parameter_id, params):
        self._sent.append((parameter_id, params))


def test_tuner_pays_refused_requests_later_and_ignores_blanked_parameters(tmp_path):
    tuner = SafsTuner(**SMALL, workspace=str(tmp_path / "ws"))
    nni = FakeNni(tuner)
    served = tuner.generate_multiple_parameters([0, 1], st_callback=nni)
    assert [p["stage"] for p in served] == ["prepare"]
    assert tuner.credits == [1]  # the refused request is kept as a credit
    # NNI 3.0 blanks a partly served batch's parameters: the result must still be matched
    tuner.receive_trial_result(0, "", {"default": 20.0, "job": served[0]["job"], "stage": "prepare"})
    # the credit is paid; with it one job is in flight, all one slot holds (no manager: concurrency 1),
    # so nothing more is sent ahead, and NNI's next request is answered, not refused
    assert nni.sent[0][0] == 1 and [p["stage"] for _, p in nni.sent] == ["baseline"]
    assert not tuner.credits
    (search,) = tuner.generate_multiple_parameters([2], st_callback=nni)
    assert search["stage"] == "search"
    # finish everything, results arriving out of order, a refused request now and then
    rng, running, next_pid = random.Random(3), {search["job"]: search}, 3
    while not tuner.pipeline.finished:
        for params in tuner.generate_multiple_parameters([next_pid, next_pid + 1], st_callback=nni):
            running[params["job"]] = params
        next_pid += 2
        for pid, params in nni.sent:
            running.setdefault(params["job"], params)
        nni.sent.clear()
        if not running:
            break
        job_id = rng.choice(list(running))
        params = running.pop(job_id)
        score = 50 + params["genome"].count("swish")
        tuner.receive_trial_result(-1, "", {"default": score, "val_acc": score, "test_acc": score,
                                             "density": 0.01, "job": job_id, "stage": params["stage"]})
    assert tuner.pipeline.finished
    summary = json.loads((tmp_path / "ws" / "summary.json").read_text())
    assert set(summary["columns"]) == {"dense", "baseline", "stage1", "stage2", "safs"}
    assert (tmp_path / "ws" / "results.md").read_text().startswith("Test top-1")


def test_tuner_state_survives_a_restart_and_imports_missed_results(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path / "ckpt"))
    (tmp_path / "ckpt").mkdir()
    tuner = SafsTuner(**SMALL, workspace=str(tmp_path / "ws"))
    nni = FakeNni(tuner)
    prepare = tuner.generate_multiple_parameters([0], st_callback=nni)[0]
    tuner.receive_trial_result(0, prepare, {"default": 20.0, "job": prepare["job"]})
    running = [p for _, p in nni.sent] + tuner.generate_multiple_parameters([1], st_callback=nni)
    assert [p["stage"] for p in running] == ["baseline", "search"]  # the first sent ahead on prepare's result

    tuner.close()  # as the stopped dispatcher's process would, at its end
    again = SafsTuner(**SMALL, workspace=str(tmp_path / "ws"))
    again.load_checkpoint()
    assert again.pipeline.jobs.keys() == tuner.pipeline.jobs.keys()
    assert again.pipeline.results.keys() == {0}
    # NNI replays results of trials that ended while the tuner was down through import_data
    again.import_data([{"parameter": running[0], "value": {"default": 30.0, "job": running[0]["job"]}}])
    assert running[0]["job"] in again.pipeline.results
    nxt = again.generate_multiple_parameters([3], st_callback=nni)
    assert nxt and nxt[0]["job"] not in (0, 1, 2)  # no finished or running job is issued again


def test_tuner_rejects_bad_class_args(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'lenet6'"):
        SafsTuner(model="lenet6", workspace=str(tmp_path))
    with pytest.raises(ValueError, match="unknown NNI tuner 'TPEE'"):
        SafsTuner(hpo_tuner="TPEE", workspace=str(tmp_path))
    with pytest.raises(ValueError, match="ratio must be in"):
        SafsTuner(ratio=1.5, workspace=str(tmp_path))
    with pytest.raises(ValueError, match="unknown setting"):
        SafsTuner(epochs=3, workspace=str(tmp_path))


def test_unwritable_workspace_is_rejected_up_front(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="workspace .*a_file/ws' is not writable"):
        SafsTuner(**SMALL, workspace=str(blocker / "ws"))


def test_requeued_jobs_count_extra_trials_only_when_nni_had_recorded_one(tmp_path):
    tuner = SafsTuner(**SMALL, workspace=str(tmp_path / "ws"))
    nni = FakeNni(tuner)
    rng = random.Random(0)
    prepare = tuner.generate_multiple_parameters([0], st_callback=nni)[0]
    tuner.receive_trial_result(0, prepare, {"default": 20.0, "job": prepare["job"]})
    (lost_unsubmitted,) = [p for _, p in nni.sent]  # sent ahead on prepare's result
    nni.sent.clear()
    (lost_cancelled,) = tuner.generate_multiple_parameters([1], st_callback=nni)
    tuner.requeue(lost_unsubmitted["job"], extra_trial=False)  # NNI never submitted its trial
    tuner.requeue(lost_cancelled["job"], extra_trial=True)  # NNI recorded a cancelled trial for it
    reissued = tuner.generate_multiple_parameters([3, 4], st_callback=nni)
    assert [p["job"] for p in reissued] == [lost_unsubmitted["job"], lost_cancelled["job"]]
    assert tuner.resubmitted == 1
    pid = 5
    for params in reissued:
        tuner.receive_trial_result(-1, params, fake_result(tuner.pipeline.jobs[params["job"]], rng).to_dict())
    while not tuner.pipeline.finished:
        running = tuner.generate_multiple_parameters([pid], st_callback=nni)
        while running or nni.sent:
            running += [p for _, p in nni.sent]
            nni.sent.clear()
            params = running.pop(0)
            tuner.receive_trial_result(pid, params, fake_result(tuner.pipeline.jobs[params["job"]], rng).to_dict())
        pid += 1
    assert tuner.reported_total == len(tuner.pipeline.jobs) + 1


def test_final_seeds_and_uniform_start_shape_the_pipeline(tmp_path):
    config = SafsConfig(**SMALL, final_seeds=3, search_init="uniform", workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, 2, random.Random(0))
    baselines = [j for j in jobs if j.stage == "baseline"]
    assert [j.params["seed"] for j in baselines] == [0, 1, 2] and {j.variant for j in baselines} == {"default"}
    for variant in FINAL_VARIANTS:
        assert sorted(j.params["seed"] for j in jobs if j.stage == "final" and j.variant == variant) == [0, 1, 2]
    search = [j for j in jobs if j.stage == "search"]
    uniform = [{op} for op in pipeline.choices]
    assert [set(j.params["genome"].replace(";", "=").split("=")[1::2]) for j in search[:len(uniform)]] == uniform
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) + pipeline.reused <= high and pipeline.total_if_known() == len(jobs)


def _drive_with(pipeline, result_of):
    while not pipeline.finished:
        job = pipeline.ask()
        assert job is not None, "the pipeline waits although nothing runs"
        pipeline.tell(job.id, result_of(job))


def test_a_stage1_whose_every_candidate_failed_ends_the_pipeline_with_the_reason(tmp_path):
    pipeline = build_pipeline(SafsConfig(**SMALL, workspace=str(tmp_path)))
    rng = random.Random(0)
    _drive_with(pipeline, lambda job: JobResult.failed(job.spec, "ValueError: boom")
                if job.stage == "search" else fake_result(job, rng))
    assert "every stage-1 candidate failed" in pipeline.failure
    assert pipeline.count("final") == 0 and pipeline.ask() is None
    assert pipeline.total_if_known() == len(pipeline.jobs)


@pytest.mark.parametrize("promotion", [{}, dict(hpo_promotion="asha", hpo_epochs=4, hpo_min_epochs=2,
                                                  hpo_reduction_factor=2)])
def test_a_stage2_study_whose_every_trial_failed_ends_the_pipeline_with_the_reason(tmp_path, promotion):
    pipeline = build_pipeline(SafsConfig(**{**SMALL, **promotion}, workspace=str(tmp_path)))
    rng = random.Random(0)
    _drive_with(pipeline, lambda job: JobResult.failed(job.spec, "RuntimeError: boom")
                if job.stage == "hpo" and job.variant.startswith("default") else fake_result(job, rng))
    assert "every trial of the stage-2 study 'default' failed (3 trials scored 0" in pipeline.failure
    assert pipeline.count("final", "stage2") == 0
    assert all(job.variant in ("default", "default-rung0") for job in pipeline.jobs.values()
               if job.stage == "hpo" and job.variant.startswith("default"))  # a failed set is never promoted
    assert pipeline.total_if_known() == len(pipeline.jobs)


def test_a_late_divergence_keeps_the_score_of_the_epochs_before_it(tmp_path):
    diverged = JobResult(3, Stage.SEARCH, Status.DIVERGED, 61.5, "loss nan", metrics={"val_acc": 61.5})
    assert diverged.fitness() == 61.5 and diverged.succeeded
    assert JobResult(3, Stage.SEARCH, Status.FAILED, 0.0, "RuntimeError").fitness() == 0.0
    assert JobResult(3, Stage.SEARCH, Status.OK, 50.0, metrics={"late_val_acc": 40.0}).fitness("late_val_acc") == 40.0
    lost = JobResult(3, Stage.SEARCH, Status.LOST, 55.0)  # whatever it claims, a lost job scores 0
    assert lost.fitness() == 0.0 and not lost.succeeded
    # the dict NNI carries round-trips, status and reason included
    assert JobResult.from_dict(diverged.to_dict()) == diverged


def test_the_final_dict_carries_the_score_under_its_stage_and_round_trips():
    """The portal's metric selector draws one stage when each final dict names every stage."""
    spec = JobSpec(7, Stage.HPO, "safs", "/ws", genome="c1=swish", hparams={"lr": 0.01}, seed=2)
    result = JobResult(7, Stage.HPO, Status.OK, 71.25, variant="safs", genome="c1=swish", parameter_id=9,
                       metrics={"val_acc": 71.25, "test_acc": 70.0}, key="abc")
    final = result.to_dict()
    assert final["default"] == final["hpo"] == 71.25
    assert {name: final[name] for name in STAGE_KEYS if name != "hpo"} == \
        {"prepare": 0.0, "baseline": 0.0, "search": 0.0, "final": 0.0}
    # the tuner folds it in as before: the stage keys are not measurements of the job
    assert JobResult.from_dict(final) == result
    assert JobResult.from_dict(final, spec).mismatch(spec, "abc") == ""
    assert JobResult.failed(spec, "RuntimeError").to_dict()["hpo"] == 0.0


def test_tpe_starts_model_based_search_after_a_fifth_of_the_budget():
    from nni_safs.integration.nni_tuners import create_tuner
    assert create_tuner("TPE", seed=0, budget=8).args.n_startup_jobs == 2
    assert create_tuner("TPE", seed=0, budget=20).args.n_startup_jobs == 4


def test_an_inner_tuner_that_cannot_suggest_yet_waits_and_one_that_breaks_raises(monkeypatch):
    """Evolution's empty population (results still out) is a wait; any other exception of an
    inner tuner is a failure that reaches the SAFS tuner (which stops with it), not a wait."""
    from nni_safs.integration.nni_tuners import TunerStream
    space = {"x": {"_type": "choice", "_value": [1, 2, 3]}}
    stream = TunerStream("Evolution", space, n_trials=40)
    asked = [stream.ask() for _ in range(stream.tuner.population_size)]
    assert all(asked) and stream.ask() is None  # the population is out being evaluated
    monkeypatch.setattr(stream.tuner, "generate_parameters", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        stream.ask()


def test_a_stage2_space_smaller_than_the_budget_ends_its_study_early(tmp_path):
    space = tmp_path / "hpo_space.json"  # one point: TPE has nothing left after one trial
    space.write_text(json.dumps({"optimizer": {"_type": "choice", "_value": [
        {"_name": "adam", "lr": {"_type": "choice", "_value": [0.001]}}]}}))
    config = SafsConfig(**SMALL, hpo_space=str(space), workspace=str(tmp_path / "ws"))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, 1, random.Random(0))
    assert pipeline.finished and not pipeline.failure
    assert sum(j.stage == "hpo" for j in jobs) == 2  # one per study, not 2 x hpo_trials
    assert pipeline.total_if_known() == len(jobs)


def test_hpo_warm_start_feeds_the_ablation_study_to_the_safs_study(tmp_path):
    config = SafsConfig(**SMALL, hpo_warm_start=True, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    drive(pipeline, 1, random.Random(0), shuffle=False)
    default, safs = pipeline.hpo["default"], pipeline.hpo["safs"]
    told_before = len(safs.prior)
    assert 0 < told_before <= len(default.history)
    assert [r["params"] for r in safs.prior] == [r["params"] for r in default.history[:told_before]]
    assert len(safs.history) == config.hpo_trials  # its own trials; the prior is never its best
    # the tuner's own suggestions avoid what the prior already measured (its first trial is the dense point)
    assert all(r["params"] not in [p["params"] for p in safs.prior] for r in safs.history[len(safs.first):])
    restored = pipeline.restored(json.loads(json.dumps(pipeline.state_dict())))
    assert restored.hpo["safs"].prior == safs.prior


def test_each_stage2_study_first_tries_the_dense_hyperparameters_when_asked(tmp_path):
    """Off by default (the reference's SMAC starts from a Sobol design); when on, the first trial
    runs the dense hyperparameters whole, keys the space does not tune (step_size) included."""
    from nni_safs.method.spaces import nest_hparams
    assert build_pipeline(SafsConfig(**SMALL, workspace=str(tmp_path / "off"))).hpo["default"].first == []
    vgg_like = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "scheduler": "step_halving",
                "step_size": 20}
    config = SafsConfig(**SMALL, train_hparams=vgg_like, hpo_default_first=True, workspace=str(tmp_path / "on"))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, 2, random.Random(0))
    for variant in ("default", "safs"):
        first = next(j for j in jobs if j.stage == "hpo" and j.variant == variant)
        assert first.params["hparams"] == vgg_like  # halving every 20 epochs, not the default step
        assert len([j for j in jobs if j.stage == "hpo" and j.variant == variant]) == config.hpo_trials
    space = pipeline.hpo_space  # a value outside the space's range cannot be a trial of it
    assert nest_hparams({"optimizer": "adam", "lr": 5.0, "beta2": 0.99}, space) is None
    assert nest_hparams({"optimizer": "rmsprop", "lr": 1e-3}, space) is None
    # the reference LeNet-5's dense Adam (betas 0.9, 0.99) is a point of the reference space; the
    # embedded default's (0.999) is not
    assert nest_hparams(dict(SafsConfig(**SMALL).hparams), space) == {
        "optimizer": {"_name": "adam", "lr": 1e-3, "weight_decay": 5e-4, "beta2": 0.99}}
    assert nest_hparams(dict(SafsConfig(**{**SMALL, "model": "lenet5_padded"}).hparams), space) is None


def test_a_genome_the_search_proposes_again_reuses_its_score_without_a_job(tmp_path):
    """Search jobs are deterministic (same checkpoint, budget and seed), so LAHC walking back to a
    genome it measured gets that score without a trial; a failed measurement is not reused."""
    config = SafsConfig(**{**SMALL, "search_steps": 30, "max_search_steps": 40}, workspace=str(tmp_path))
    base = build_pipeline(config)
    pipeline = SafsPipeline(config, base.slot_names, ["relu", "swish"], base.hpo_space, base.own_activation,
                            base.studies)  # 16 genomes: revisits
    scores = {}

    def score(job):
        if job.stage == "search" and job.params["genome"] not in scores:
            scores[job.params["genome"]] = 50 + 5 * job.params["genome"].count("swish") + len(scores) % 3
            if len(scores) == 2:
                return JobResult.failed(job.spec, "RuntimeError: killed")
        value = scores.get(job.params["genome"], 60)
        return JobResult.from_dict({"default": value, "val_acc": value, "test_acc": value}, job.spec)

    _drive_with(pipeline, score)
    search = [j.params["genome"] for j in pipeline.jobs.values() if j.stage == "search"]
    failed_once = list(scores)[1]
    assert search.count(failed_once) == 2  # re-measured after its failure
    assert len(search) - 1 == len(set(search)) and pipeline.reused > 0
    evaluations = pipeline.search.trace
    assert len(evaluations) == len(search) + pipeline.reused
    assert pipeline.total_if_known() == len(pipeline.jobs)
    summary_search = build_summary(pipeline)["stages"]["search"]
    assert summary_search["evaluations"] == len(evaluations) and summary_search["reused"] == pipeline.reused


def _drive_scored(pipeline, score):
    """Run every job of ``pipeline`` two at a time, each scored by ``score(job)``."""
    rng, running, jobs = random.Random(0), [], []
    while not pipeline.finished:
        while len(running) < 2 and (job := pipeline.ask()) is not None:
            running.append(job)
            jobs.append(job)
        done = running.pop(rng.randrange(len(running)))
        value = score(done)
        pipeline.tell(done.id, JobResult.from_dict({"default": value, "val_acc": value, "test_acc": value,
                                                    "density": 0.01}, done.spec))
    return jobs


@pytest.mark.parametrize("own_wins", [True, False])
def test_the_confirmation_keeps_the_own_activation_unless_a_searched_genome_beats_it(tmp_path, own_wins):
    """With confirm_top, the search's top genomes and the own activation are re-scored on fresh
    seeds; stage 1's winner (the SAFS study's and the stage-1 column's genome) is the best mean,
    so the search can never hand stage 2 a genome that scored below the own activation."""
    config = SafsConfig(**SMALL, confirm_top=2, confirm_epochs=3, final_seeds=2, workspace=str(tmp_path / "ws"))
    pipeline = build_pipeline(config)
    own = "act1=relu;act2=relu;act3=relu;act4=relu"

    def score(job):
        swish = job.params["genome"].count("swish")
        if job.variant != "confirm":
            return 50.0 + 5 * swish  # the search prefers swish
        if job.params["genome"] == own:
            return 80.0 if own_wins else 55.0
        return 60.0 + swish + job.params["seed"] % 2  # re-scored lower than in the search (its max)

    jobs = _drive_scored(pipeline, score)
    assert pipeline.finished and not pipeline.failure
    confirm = [j for j in jobs if j.variant == "confirm"]
    genomes = pipeline.confirm_genomes()
    assert genomes[0] == own and len(genomes) == 3 and len(confirm) == 3 * 2
    # fresh seeds: neither the search's (0) nor the final columns' (0, 1)
    assert {j.params["seed"] for j in confirm} == {2, 3} and {j.params["epochs"] for j in confirm} == {3}
    searched = [j for j in jobs if j.stage == "search" and j.variant != "confirm"]
    assert max(confirm, key=lambda j: j.id).id > max(searched, key=lambda j: j.id).id  # after the search
    winner = genome_to_string(pipeline.winner[0])
    assert (winner == own) is own_wins
    assert winner != genome_to_string(pipeline.search.best[0]) if own_wins else winner in genomes[1:]
    for job in jobs:
        if (job.stage, job.variant) in (("hpo", "safs"), ("final", "safs"), ("final", "stage1")):
            assert job.params["genome"] == winner
    assert len(jobs) == pipeline.total_if_known()
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) <= high
    summary = build_summary(pipeline)
    assert summary["stages"]["search"]["kept_own_activation"] is own_wins
    assert summary["stages"]["search"]["winner"] == winner
    restored = build_pipeline(config).restored(pipeline.state_dict())
    assert restored.confirm_genomes() == genomes and restored.winner == pipeline.winner


@pytest.mark.parametrize("own_wins", [True, False])
def test_the_confirmations_first_seed_promotes_the_own_activation_and_the_best_other(tmp_path, own_wins):
    """With confirm_finalists, every confirmed genome runs on the first fresh seed; only the own
    activation and the best other there run on the later seeds, and the winner is theirs. The
    own activation always goes on, so a challenger that led on one seed must still beat it on
    the mean."""
    config = SafsConfig(**SMALL, confirm_top=3, confirm_epochs=3, confirm_seeds=3, confirm_finalists=1,
                        final_seeds=2, workspace=str(tmp_path / "ws"))
    pipeline = build_pipeline(config)
    own = "act1=relu;act2=relu;act3=relu;act4=relu"
    first_seed = pipeline.confirm_seeds[0]
    first_round: dict[str, float] = {}

    def score(job):
        genome = job.params["genome"]
        if job.variant != "confirm":
            return 50.0 + 5 * genome.count("swish") + 0.1 * genome.count("gelu")
        if genome == own:
            return 70.0
        if job.params["seed"] == first_seed:  # the challengers, as they come in: 75, 74, 73
            first_round[genome] = 75.0 - len(first_round)
            return first_round[genome]
        return 60.0 if own_wins else 80.0

    jobs = _drive_scored(pipeline, score)
    assert pipeline.finished and not pipeline.failure
    genomes = pipeline.confirm_genomes()
    leader = max(first_round, key=first_round.get)
    assert pipeline.confirm_finalists() == [own, leader] and len(genomes) == 4
    confirm = [j for j in jobs if j.variant == "confirm"]
    runs = sorted((j.params["genome"], j.params["seed"]) for j in confirm)
    later = [first_seed + 1, first_seed + 2]
    assert runs == sorted([(g, first_seed) for g in genomes] + [(g, s) for g in (own, leader) for s in later])
    # the later seeds start only once the first seed's runs are all in
    first_done = max(j.id for j in confirm if j.params["seed"] == first_seed)
    assert all(j.id > first_done for j in confirm if j.params["seed"] != first_seed)
    winner = genome_to_string(pipeline.winner[0])
    assert winner == (own if own_wins else leader)  # own: 70 x 3 against the leader's 75, 60, 60 (or 75, 80, 80)
    scores = pipeline.confirm_scores()
    assert [len(scores[g]) for g in genomes] == [3 if g in (own, leader) else 1 for g in genomes]
    assert len(jobs) == pipeline.total_if_known()
    low, high = pipeline.evaluation_bounds()
    assert len(confirm) == 4 + 2 * 2 and low <= len(jobs) <= high
    summary = build_summary(pipeline)
    assert summary["stages"]["search"]["kept_own_activation"] is own_wins
    table = format_table(json.loads(json.dumps(summary)))
    assert "mean over 3 fresh seeds (2 more stopped after the first seed)." in table
    assert ("own 70.00, best searched 65.00" if own_wins else "78.33 against 70.00") in table
    restored = build_pipeline(config).restored(json.loads(json.dumps(pipeline.state_dict())))
    assert restored.confirm_finalists() == [own, leader] and restored.winner == pipeline.winner


@pytest.mark.parametrize("one_op_wins", [True, False])
def test_the_confirmation_also_rescores_the_searchs_best_one_op_genome(tmp_path, one_op_wins):
    """confirm_uniform: the best one-op genome the search measured joins the confirmation (after
    the top confirm_top, where not among them), so a mixed genome that led at the search budget
    must beat it at the final budget too; when the leader is itself one-op, nothing is added."""
    config = SafsConfig(**SMALL, search_init="uniform", confirm_top=1, confirm_uniform=1, confirm_epochs=3,
                        confirm_finalists=1, final_seeds=2, workspace=str(tmp_path / "ws"))
    pipeline = build_pipeline(config)
    own, tanh = "act1=relu;act2=relu;act3=relu;act4=relu", "act1=tanh;act2=tanh;act3=tanh;act4=tanh"

    def ops(job):
        return job.params["genome"].replace(";", "=").split("=")[1::2]

    def search_score(job):  # tanh is the best one-op genome; mixing in a swish scores higher still
        return 40.0 + 2 * ops(job).count("tanh") + 5 * ("tanh" in ops(job) and "swish" in ops(job))

    def score(job):
        if job.variant != "confirm":
            return search_score(job)
        if job.params["genome"] == own:
            return 70.0
        return 90.0 if (job.params["genome"] == tanh) is one_op_wins else 80.0

    jobs = _drive_scored(pipeline, score)
    assert pipeline.finished and not pipeline.failure
    leader = genome_to_string(pipeline.search.best[0])
    assert leader != tanh and len(set(pipeline.search.best[0].values())) > 1
    assert pipeline.confirm_genomes() == [own, leader, tanh]
    assert genome_to_string(pipeline.winner[0]) == (tanh if one_op_wins else leader)
    confirm = [j for j in jobs if j.variant == "confirm"]
    assert len(confirm) == 3 + 2 == pipeline._confirm_count(3) and len(jobs) == pipeline.total_if_known()
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) <= high
    # the leader one-op itself: confirmed once, nothing added in its place
    plain = build_pipeline(SafsConfig(**{**config.__dict__, "workspace": str(tmp_path / "plain")}))
    _drive_scored(plain, lambda job: 40.0 + 2 * ops(job).count("tanh"))
    assert plain.confirm_genomes() == [own, tanh] and len(plain.jobs) == plain.total_if_known()


def test_a_restart_between_the_confirmations_seeds_promotes_the_same_finalists(tmp_path):
    config = SafsConfig(**SMALL, confirm_top=2, confirm_epochs=3, confirm_finalists=1, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng = random.Random(1)
    while pipeline.confirm_finalists() is None or not pipeline.confirm_genomes():
        job = pipeline.ask()
        pipeline.tell(job.id, fake_result(job, rng))
    restored = build_pipeline(config).restored(json.loads(json.dumps(pipeline.state_dict())))
    assert restored.confirm_finalists() == pipeline.confirm_finalists()
    nxt, again = pipeline.ask(), restored.ask()
    assert nxt.params == again.params and nxt.variant == "confirm"
    assert nxt.params["genome"] in pipeline.confirm_finalists()


def test_a_confirmation_issued_genome_by_genome_resumes_without_repeating_a_run(tmp_path):
    """Releases before confirm_finalists issued the confirmation genome by genome (each on every
    seed); a state they saved mid-confirmation resumes with each (genome, seed) run once."""
    from nni_safs.method.contract import CONFIRM
    from nni_safs.method.genomes import genome_from_string
    config = SafsConfig(**SMALL, confirm_top=2, confirm_epochs=3, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng = random.Random(2)
    while not pipeline.confirm_genomes():
        job = pipeline.ask()
        pipeline.tell(job.id, fake_result(job, rng))
    genomes, seeds = pipeline.confirm_genomes(), pipeline.confirm_seeds
    for genome, seed in [(genomes[0], seeds[0]), (genomes[0], seeds[1]), (genomes[1], seeds[0])]:  # the old order
        job = pipeline._emit(Stage.SEARCH, CONFIRM, genome=genome_from_string(genome), hparams=config.hparams,
                             epochs=3, seed=seed)
        pipeline.tell(job.id, fake_result(job, rng))
    resumed = build_pipeline(config).restored(json.loads(json.dumps(pipeline.state_dict())))
    jobs = drive(resumed, 1, random.Random(0))
    confirm = [(j.spec.genome, j.spec.seed) for j in resumed.jobs.values() if j.variant == CONFIRM]
    assert sorted(confirm) == sorted((g, s) for g in genomes for s in seeds)
    assert resumed.finished and not resumed.failure and all(len(v) == 2 for v in resumed.confirm_scores().values())
    assert len(resumed.jobs) == resumed.total_if_known() and jobs


def test_the_safs_study_can_start_from_the_ablation_studys_best(tmp_path):
    """hpo_ablation_best_first: the SAFS study's first trial runs the ablation study's best
    hyperparameters on the stage-1 genome, so SAFS always measures stage 2's choice too."""
    config = SafsConfig(**SMALL, hpo_warm_start=True, hpo_ablation_best_first=True, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, 1, random.Random(0), shuffle=False)
    default = pipeline.hpo["default"]
    ablation_best = next(j for j in jobs if j.stage == "hpo" and j.variant == "default"
                         and pipeline.results[j.id].fitness() == default.best[1])
    first_safs = next(j for j in jobs if j.stage == "hpo" and j.variant == "safs")
    assert first_safs.params["hparams"] == ablation_best.params["hparams"]
    assert first_safs.params["genome"] and first_safs.params["train_scales"]
    assert pipeline.hpo["safs"].first == [default.best[0]]
    assert len([j for j in jobs if j.stage == "hpo" and j.variant == "safs"]) == config.hpo_trials
    # off: the usual first trials (none here, hpo_default_first is off)
    off = build_pipeline(SafsConfig(**SMALL, hpo_warm_start=True, workspace=str(tmp_path / "off")))
    drive(off, 1, random.Random(0), shuffle=False)
    assert off.hpo["safs"].first == []


def test_without_confirmation_stage1_is_the_searchs_best(tmp_path):
    pipeline = build_pipeline(SafsConfig(**SMALL, workspace=str(tmp_path)))
    jobs = drive(pipeline, 2, random.Random(0))
    assert not [j for j in jobs if j.variant == "confirm"] and pipeline.confirm_genomes() == []
    assert pipeline.winner == pipeline.search.best


ASHA = dict(search_algorithm="asha", search_steps=9, search_epochs=9, search_min_epochs=1)  # rungs 1, 3, 9


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_asha_runs_the_ladder_and_its_top_rung_chooses_stage1(tmp_path, concurrency):
    """Each search job names its rung and that rung's epochs; the own activation is measured at the
    top rung beside the promoted genomes; the best there is stage 1's winner, without a separate
    confirmation; the jobs run on the first confirmation seed, not on a final column's."""
    config = SafsConfig(**{**SMALL, **ASHA}, search_init="uniform", workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    jobs = drive(pipeline, concurrency, random.Random(concurrency))
    search = [j for j in jobs if j.stage == "search"]
    epochs = {"asha-rung0": 1, "asha-rung1": 3, "asha-rung2": 9}
    assert all(epochs[j.variant] == j.params["epochs"] for j in search)
    assert {j.params["seed"] for j in search} == {pipeline.confirm_seeds[0]} != {pipeline.seeds[0]}
    own = genome_to_string({slot: pipeline.own_activation for slot in pipeline.slot_names})
    assert [j.variant for j in search if j.params["genome"] == own] == ["asha-rung2"]
    assert sum(j.variant == "asha-rung0" for j in search) == 9
    top = {j.params["genome"]: pipeline.results[j.id].score for j in search if j.variant == "asha-rung2"}
    assert len(top) >= 2 and genome_to_string(pipeline.winner[0]) == max(top, key=top.get)
    final_stage1 = [j for j in jobs if j.stage == "final" and j.variant == "stage1"]
    assert final_stage1[0].params["genome"] == genome_to_string(pipeline.winner[0])
    assert pipeline.total_if_known() == len(jobs)
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) + pipeline.reused <= high
    assert build_summary(pipeline)["stages"]["search"]["winner"] == genome_to_string(pipeline.winner[0])


def test_asha_resumes_mid_ladder_without_repeating_an_evaluation(tmp_path):
    """The pipeline's state saved with rung jobs in flight and restored: the jobs in flight report
    afterwards, and no (genome, rung) is issued twice."""
    config = SafsConfig(**{**SMALL, **ASHA}, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng, running = random.Random(0), []
    while sum(j.stage == "search" for j in pipeline.jobs.values()) < 12:
        while len(running) < 2 and (job := pipeline.ask()) is not None:
            running.append(job)
        done = running.pop(0)
        pipeline.tell(done.id, fake_result(done, rng))
    assert any(j.stage == "search" and j.variant != "asha-rung0" for j in pipeline.jobs.values())
    restored = pipeline.restored(json.loads(json.dumps(pipeline.state_dict())))
    for job in running:
        restored.tell(job.id, fake_result(job, rng))
    drive(restored, 2, rng)
    assert restored.finished and not restored.failure
    search = [(j.variant, j.params["genome"]) for j in restored.jobs.values() if j.stage == "search"]
    assert len(search) == len(set(search))
    assert restored.total_if_known() == len(restored.jobs)


HPO_ASHA = dict(hpo_promotion="asha", hpo_trials=4, hpo_epochs=4, hpo_min_epochs=1, hpo_reduction_factor=2)  # rungs 1, 2, 4


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_hpo_promotion_runs_each_study_on_its_ladder_and_the_final_columns_take_the_top_rung(tmp_path, concurrency):
    """Each stage-2 job names its study and rung and runs that rung's epochs on the first
    confirmation seed; the stage2 and SAFS columns get their study's best at the top rung; the
    trial count the tuner ends NNI with is told only once it is exact."""
    config = SafsConfig(**{**SMALL, **HPO_ASHA}, hpo_ablation_best_first=True, hpo_warm_start=True,
                        workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng, running, jobs, totals = random.Random(concurrency), [], [], set()
    while not pipeline.finished:
        while len(running) < concurrency and (job := pipeline.ask()) is not None:
            running.append(job)
            jobs.append(job)
        done = running.pop(rng.randrange(len(running)))
        pipeline.tell(done.id, fake_result(done, random.Random(json.dumps(done.params["hparams"], sort_keys=True))))
        totals.add(pipeline.total_if_known())
    assert totals - {None} == {len(jobs)}
    hpo = [j for j in jobs if j.stage == "hpo"]
    epochs = {f"{study}-rung{rung}": budget for study in ("default", "safs") for rung, budget in enumerate((1, 2, 4))}
    assert all(epochs[j.variant] == j.params["epochs"] for j in hpo)
    assert {j.params["seed"] for j in hpo} == {pipeline.confirm_seeds[0]} != {pipeline.seeds[0]}
    final = {j.variant: j for j in jobs if j.stage == "final"}
    for study, column in (("default", "stage2"), ("safs", "safs")):
        assert sum(j.variant == f"{study}-rung0" for j in hpo) == 4
        top = {json.dumps(j.params["hparams"], sort_keys=True): pipeline.results[j.id].score
               for j in hpo if j.variant == f"{study}-rung2"}
        assert top and json.dumps(final[column].params["hparams"], sort_keys=True) == max(top, key=top.get)
        assert len(pipeline.hpo[study].history) == 4  # the tuner saw each set once, at the lowest rung
    low, high = pipeline.evaluation_bounds()
    assert low <= len(jobs) + pipeline.reused <= high
    summary = build_summary(pipeline)
    assert [e["rung"] for e in summary["stages"]["hpo"]["safs"]["trace"]].count(0) == 4


def test_hpo_promotion_resumes_mid_ladder_without_repeating_an_evaluation(tmp_path):
    config = SafsConfig(**{**SMALL, **HPO_ASHA}, workspace=str(tmp_path))
    pipeline = build_pipeline(config)
    rng, running = random.Random(0), []
    while not any(j.variant == "default-rung1" for j in running):
        while len(running) < 2 and (job := pipeline.ask()) is not None:
            running.append(job)
        done = running.pop(0)
        pipeline.tell(done.id, fake_result(done, rng))
    restored = pipeline.restored(json.loads(json.dumps(pipeline.state_dict())))
    for job in running:
        restored.tell(job.id, fake_result(job, rng))
    drive(restored, 2, rng)
    assert restored.finished and not restored.failure
    hpo = [(j.variant, json.dumps(j.params["hparams"], sort_keys=True)) for j in restored.jobs.values()
           if j.stage == "hpo"]
    assert len(hpo) == len(set(hpo)) and sum(variant.endswith("-rung0") for variant, _ in hpo) == 8
    assert restored.total_if_known() == len(restored.jobs)


def test_without_hpo_promotion_every_stage2_trial_runs_hpo_epochs_on_the_run_seed(tmp_path):
    pipeline = build_pipeline(SafsConfig(**SMALL, hpo_epochs=5, workspace=str(tmp_path)))
    hpo = [j for j in drive(pipeline, 2, random.Random(0)) if j.stage == "hpo"]
    assert sorted({j.variant for j in hpo}) == ["default", "safs"]
    assert {(j.params["epochs"], j.params["seed"]) for j in hpo} == {(5, pipeline.config.seed)}

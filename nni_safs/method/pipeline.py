"""The SAFS stage flow as a plain ask/tell state machine: the one place the stages live.

Stages and their jobs (every job's parameters name its ``stage``):

* ``prepare``  1 job: dense training + one-shot pruning into the workspace. Barrier.
* ``baseline`` ``final_seeds`` jobs: the pruned net with the model's own activation (ReLU;
  swish for EfficientNet-B0) and the dense hyperparameters (final budget), one per seed.
* ``search``   stage 1: a genome per job (LAHC, or an NNI tuner on the slot space), frozen
  alpha/beta, dense hyperparameters, ``search_epochs``. With ``search_algorithm: asha`` each
  job's variant names its rung (``asha-rung0``, ...) and its epochs are that rung's budget,
  the top rung's being ``search_epochs``; its jobs run on the first confirmation seed (the
  top rung is its confirmation, and a final column's run must not be the one that chose it),
  and the model's own activation is measured at the top rung beside the promoted genomes.
* ``search``, variant ``confirm`` (``confirm_top`` or ``confirm_uniform`` > 0): once the search
  has stopped, its top ``confirm_top`` genomes, its best ``confirm_uniform`` one-op genomes and
  the model's own activation are fine-tuned again with
  ``confirm_epochs`` on the first of ``confirm_seeds`` seeds; the own activation and the best
  ``confirm_finalists`` others on that seed (all with ``None``) go on to the other seeds. Stage
  1's winner is the finalists' best mean, the own activation on a tie, so a searched genome wins
  only where it beat the own activation on every seed's mean.
* ``hpo``      stage 2: ``hpo_trials`` jobs with the stage-1 winner and trainable alpha/beta
  (variant ``safs``), and as many for the ablation on the model's own activation (variant
  ``default``), which needs no stage-1 result and so fills free slots while the search runs.
  With ``hpo_promotion: asha`` each study's trials start at the lowest rung and the best are
  promoted to longer budgets (the top one ``hpo_epochs``): the variant names the rung
  (``safs-rung0``, ``default-rung1``, ...), the epochs are its budget, and the jobs run on the
  first confirmation seed.
* ``final``    3 x ``final_seeds`` jobs with the final budget: variant ``stage1`` (winner
  genome, dense hyperparameters), ``stage2`` (own activation, trainable scales, the default
  study's best), ``safs`` (winner genome, trainable scales, the SAFS study's best).

``ask()`` returns the next job, or ``None`` when every remaining job waits on results
(a barrier); ``finished`` says when nothing is left. A stage that cannot produce what the
next one needs (a failed prepare, a stage 1 or a stage-2 study whose every evaluation
failed) sets ``failure``: nothing more is issued and the pipeline ends once the running
jobs are in. It knows nothing of NNI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nni_safs.method.asha import AshaArguments, SuccessiveHalving, rung_epochs
from nni_safs.method.confirmation import candidates, finalists, winner
from nni_safs.method.contract import (
    CONFIRM,
    FINAL_VARIANTS,
    OWN_ACTIVATION,
    SAFS,
    JobResult,
    JobSpec,
    Stage,
    rung_variant,
    study_of,
)
from nni_safs.method.genomes import Genome, genome_from_string, genome_to_string
from nni_safs.method.halving_study import HalvingStudy
from nni_safs.method.lahc import LahcArguments, LateAcceptanceHillClimbing
from nni_safs.method.optimizer import Optimizer, Studies
from nni_safs.method.spaces import flatten_hparams, nest_hparams, slot_space
from nni_safs.method.state import LogView, assemble
from nni_safs.settings.config import SafsConfig


@dataclass
class Job:
    """An issued job: its spec, and its key in the search or study that proposed it."""

    spec: JobSpec
    stream_key: Any = None  # search and hpo jobs

    @property
    def id(self) -> int:
        return self.spec.job

    @property
    def stage(self) -> Stage:
        return self.spec.stage

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def params(self) -> dict[str, Any]:
        """What the trial receives."""
        return self.spec.to_params()

    def record(self) -> dict[str, Any]:
        return {"params": self.params, "stream_key": self.stream_key}


SCORE_KEYS = {"best": None, "late_mean": "late_val_acc"}  # search_score -> the result metric scored


class SafsPipeline:
    """The stage flow of one run.

    Args:
        config: the run's settings.
        slot_names: the model's activation slots, in forward order.
        choices: the ops stage 1 chooses from.
        hpo_space: stage 2's space (NNI's search-space format).
        own_activation: the model's own op (the baseline's, and stage 1's winner on a tie).
        studies: makes the stage-2 studies and a stage-1 search other than LAHC (NNI's built-in
            tuners: :class:`nni_safs.integration.nni_tuners.TunerStream`).
    """

    def __init__(self, config: SafsConfig, slot_names: list[str], choices: list[str], hpo_space: dict,
                 own_activation: str, studies: Studies) -> None:
        self.config = config
        self.slot_names = list(slot_names)
        self.choices = list(choices)
        self.hpo_space = hpo_space
        self.own_activation = own_activation
        self.studies = studies
        self.jobs: dict[int, Job] = {}
        self.results: dict[int, JobResult] = {}
        self.next_id = 0
        self.reused = 0  # search proposals answered with an earlier job's score (no trial run)
        self._measured: dict[tuple[str, int], JobResult] = {}  # (genome, epochs) -> its search job's result
        self._confirm: list[str] | None = None  # the genomes the confirmation re-scores, own activation first
        self._winner: tuple[Genome, float] | None = None  # stage 1's result once known: it never changes then
        self.failure = ""  # set when a stage cannot go on (see the module docstring): nothing more is issued
        self.search: Optimizer = self._new_search()
        self.hpo: dict[str, Optimizer | None] = {
            OWN_ACTIVATION: self._new_study(config.seed + 1, first=self._first_hpo_trials()),
            SAFS: None,  # created once stage 1 has a winner
        }

    # -- stage-1 algorithm -------------------------------------------------------------
    def _new_search(self) -> Optimizer:
        c = self.config
        initial = [{slot: op for slot in self.slot_names} for op in self.choices] \
            if c.search_init == "uniform" else None
        if c.search_algorithm == "lahc":
            args = LahcArguments(history=c.search_history, min_steps=c.search_steps,
                                 idle_fraction=c.search_idle_fraction, max_steps=c.max_search_steps)
            return LateAcceptanceHillClimbing(self.slot_names, self.choices, args, seed=c.seed, initial=initial)
        if c.search_algorithm == "asha":
            args = AshaArguments(genomes=c.search_steps, min_epochs=c.search_min_epochs, max_epochs=c.search_epochs,
                                 reduction_factor=c.search_reduction_factor)
            return SuccessiveHalving(self.slot_names, self.choices, args, seed=c.seed, initial=initial,
                                     anchors=[{slot: self.own_activation for slot in self.slot_names}])
        return self.studies(c.search_algorithm, slot_space(self.slot_names, self.choices), c.search_steps, c.seed)

    # -- stage-2 studies ---------------------------------------------------------------
    @property
    def hpo_rungs(self) -> tuple[int, ...]:
        """A stage-2 trial's budgets, lowest first: ``hpo_epochs`` alone, or the rungs of
        ``hpo_promotion: asha`` (the top one ``hpo_epochs``)."""
        c = self.config
        if c.hpo_promotion == "asha":
            return rung_epochs(c.hpo_min_epochs, c.hpo_epochs, c.hpo_reduction_factor)
        return (c.hpo_epochs,)

    def _new_study(self, seed: int, prior: list[dict] | None = None, first: list[dict] | None = None) -> Optimizer:
        """A stage-2 study: the tuner's, or with ``hpo_promotion: asha`` its proposals on the rungs."""
        c = self.config
        study = self.studies(c.hpo_tuner, self.hpo_space, c.hpo_trials, seed, prior=prior, first=first)
        return HalvingStudy(study, self.hpo_rungs, c.hpo_reduction_factor) if c.hpo_promotion == "asha" else study

    def _restored_study(self, state: dict) -> Optimizer:
        if self.config.hpo_promotion == "asha":
            return HalvingStudy.from_state_dict(state, self.studies.from_state_dict)
        return self.studies.from_state_dict(state)

    def _hpo_budget(self, study: str, key: Any) -> tuple[str, int, int | None]:
        """The variant, epochs and seed (None: ``seed``) of the stage-2 job for ``study``'s ``key``:
        a rung's with promotion, on the first confirmation seed (a promoted set may run at the
        final budget, and a final column must not report the run that chose it)."""
        stream = self.hpo[study]
        if isinstance(stream, HalvingStudy):
            rung = stream.rung_of(key)
            return rung_variant(study, rung), stream.rungs[rung], self.confirm_seeds[0]
        return study, self.config.hpo_epochs, None

    def _first_hpo_trials(self) -> list[dict]:
        """The dense hyperparameters as each study's first trial, when the space can express them."""
        point = nest_hparams(self.config.hparams, self.hpo_space) if self.config.hpo_default_first else None
        return [point] if point else []

    def _hparams(self, nested: dict) -> dict:
        """A study's point as training hyperparameters: the dense ones whole (with what the space does
        not tune, e.g. ``step_size``) when it is the default first trial."""
        first = self._first_hpo_trials()
        return dict(self.config.hparams) if first and nested == first[0] else flatten_hparams(nested)

    # -- the flow ------------------------------------------------------------------------
    @property
    def seeds(self) -> list[int]:
        """The fine-tuning seeds of the baseline and of each final column."""
        return [self.config.seed + i for i in range(self.config.final_seeds)]

    @property
    def finished(self) -> bool:
        everything_in = len(self.results) == len(self.jobs)
        if self.failure:
            return everything_in
        return everything_in and self.count(Stage.FINAL) == len(FINAL_VARIANTS) * len(self.seeds)

    def count(self, stage: str, variant: str | None = None) -> int:
        return sum(1 for j in self.jobs.values() if j.stage == stage and variant in (None, j.variant))

    def _done(self, stage: str, variant: str | None = None) -> bool:
        ids = [j.id for j in self.jobs.values() if j.stage == stage and variant in (None, j.variant)]
        return bool(ids) and all(i in self.results for i in ids)

    def ask(self) -> Job | None:
        if self.failure:
            return None
        if not self.count(Stage.PREPARE):
            return self._emit(Stage.PREPARE, "", epochs=self.config.dense_epochs)
        if not self._done(Stage.PREPARE):
            return None
        if self.count(Stage.BASELINE) < len(self.seeds):
            return self._emit(Stage.BASELINE, OWN_ACTIVATION, genome=None, hparams=self.config.hparams,
                              epochs=self.config.baseline_epochs, train_scales=False,
                              seed=self.seeds[self.count(Stage.BASELINE)])
        job = self._ask_search() or self._ask_confirm() or self._ask_hpo(OWN_ACTIVATION) or self._ask_hpo(SAFS)
        return job or self._ask_final()

    def _ask_search(self) -> Job | None:
        while (asked := self.search.ask()) is not None:
            key, genome = asked
            variant, epochs, seed = self._search_budget(key)
            earlier = self._search_result(genome_to_string(genome), epochs)
            if earlier is None:
                job = self._emit(Stage.SEARCH, variant, genome=genome, hparams=self.config.hparams, epochs=epochs,
                                 train_scales=False, data_fraction=self.config.search_data_fraction, seed=seed)
                job.stream_key = key
                return job
            self.search.tell(key, self._search_fitness(earlier))
            self.reused += 1
        self._check_search()
        return None

    def _search_budget(self, key: Any) -> tuple[str, int, int]:
        """The variant, epochs and seed of the search job for ``key``: a rung's with ASHA."""
        if isinstance(self.search, SuccessiveHalving):
            rung = self.search.rung_of(key)
            return rung_variant("asha", rung), self.search.rungs[rung], self.confirm_seeds[0]
        return self.config.search_algorithm, self.config.search_epochs, self.config.seed

    # -- stage 1's winner ----------------------------------------------------------------
    @property
    def confirm_seeds(self) -> list[int]:
        """Fresh fine-tuning seeds, after the final columns' (the search ran ``seed``, the first of
        them): a search score is the maximum of many noisy draws, so it is biased upwards, and a
        confirmation run on a final seed would be the stage-1 column's own run, chosen for
        scoring well; fresh runs are neither."""
        first = self.config.seed + self.config.final_seeds
        return [first + i for i in range(self.config.confirm_seeds)]

    def confirm_genomes(self) -> list[str]:
        """What the confirmation re-scores (none before the search has stopped, or when it is off):
        the model's own activation, then the search's top ``confirm_top`` other genomes, then
        those of its best ``confirm_uniform`` one-op genomes not among them, as fixed when the
        search stopped (:meth:`_check_search`)."""
        return list(self._confirm or [])

    def _confirm_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.stage == Stage.SEARCH and j.variant == CONFIRM]

    def confirm_finalists(self) -> list[str] | None:
        """The genomes scored on every confirmation seed: the own activation and the best
        ``confirm_finalists`` others on the first seed (:func:`finalists`), or every confirmed
        genome when that is ``None``; ``None`` while the first seed's runs are still out."""
        genomes = self.confirm_genomes()
        keep = self.config.confirm_finalists
        if not genomes or keep is None or keep >= len(genomes) - 1:
            return genomes or None  # everyone goes on: no need to read the first seed's results
        first = {j.spec.genome: self._search_fitness(self.results[j.id]) for j in self._confirm_jobs()
                 if j.spec.seed == self.confirm_seeds[0] and j.id in self.results}
        return finalists(genomes, first, keep) if len(first) == len(genomes) else None

    def _confirm_runs(self) -> list[tuple[str, int]]:
        """The confirmation's (genome, seed) runs as far as they are known, in issue order: every
        confirmed genome on the first seed, then the finalists on the other seeds. (Runs are issued
        by what is missing, not by count: a state saved by a release that issued them genome by
        genome resumes without repeating one.)"""
        genomes, seeds = self.confirm_genomes(), self.confirm_seeds
        runs = [(genome, seeds[0]) for genome in genomes]
        finalists = self.confirm_finalists() if genomes else None
        return runs + [(genome, seed) for genome in finalists or [] for seed in seeds[1:]]

    def _ask_confirm(self) -> Job | None:
        issued = {(job.spec.genome, job.spec.seed) for job in self._confirm_jobs()}
        genome, seed = next((run for run in self._confirm_runs() if run not in issued), (None, None))
        if genome is None:
            return None
        return self._emit(Stage.SEARCH, CONFIRM, genome=genome_from_string(genome), hparams=self.config.hparams,
                          epochs=self.config.confirm_epochs or self.config.search_epochs, train_scales=False,
                          data_fraction=self.config.search_data_fraction, seed=seed)

    def confirm_scores(self) -> dict[str, list[float]] | None:
        """Each confirmed genome's scores over the seeds it ran, once every confirmation job is in."""
        runs, jobs = self._confirm_runs(), self._confirm_jobs()
        if not runs or not set(runs) <= {(j.spec.genome, j.spec.seed) for j in jobs} or \
                any(j.id not in self.results for j in jobs):
            return None
        scores: dict[str, list[float]] = {genome: [] for genome in self.confirm_genomes()}
        for job in jobs:
            scores[job.spec.genome].append(self._search_fitness(self.results[job.id]))
        return scores

    @property
    def winner(self) -> tuple[Genome, float] | None:
        """Stage 1's result (genome, score), once known: the search's best, or with a confirmation
        the finalists' best mean in the confirmation (the own activation unless a searched genome
        beat it). Asked on every ``ask``, so it is found once: a finished search's best and a complete
        confirmation are final."""
        if self._winner is None:
            self._winner = self._find_winner()
        return self._winner

    def _find_winner(self) -> tuple[Genome, float] | None:
        if not self.search.finished or self.search.best is None:
            return None
        if not self.config.confirms:
            return self.search.best
        scores = self.confirm_scores()
        if scores is None:
            return None
        best, mean = winner({genome: scores[genome] for genome in self.confirm_finalists()})
        return genome_from_string(best), mean

    def _search_result(self, genome: str, epochs: int) -> JobResult | None:
        """An earlier search job's result for ``genome`` at this budget, when it was measured: every
        search job fine-tunes the same checkpoint with the same seed, so a genome the search
        proposes again (LAHC walking back, a tuner repeating a point) scores what it scored; a
        failed or lost job is not reused (that was the machine, not the genome)."""
        return self._measured.get((genome, epochs))

    def _remember(self, job: Job, result: JobResult) -> None:
        if job.stage == Stage.SEARCH and job.variant != CONFIRM and result.succeeded:
            self._measured.setdefault((job.spec.genome, job.spec.epochs), result)

    def _ask_hpo(self, variant: str) -> Job | None:
        stream = self.hpo[variant]
        winner = self.winner
        if stream is None:
            if winner is None:
                return None
            ablation = self.hpo[OWN_ACTIVATION]
            prior = ablation.history if self.config.hpo_warm_start else None
            first = [ablation.best[0]] if self.config.hpo_ablation_best_first and ablation.best \
                else self._first_hpo_trials()
            stream = self.hpo[variant] = self._new_study(self.config.seed + 2, prior=prior, first=first)
        asked = stream.ask()
        if asked is None:
            return None
        key, nested = asked
        genome = None if variant == OWN_ACTIVATION else winner[0]
        name, epochs, seed = self._hpo_budget(variant, key)
        job = self._emit(Stage.HPO, name, genome=genome, hparams=self._hparams(nested), epochs=epochs,
                         train_scales=True, data_fraction=self.config.search_data_fraction, seed=seed)
        job.stream_key = key
        return job

    def _ask_final(self) -> Job | None:
        c = self.config
        best = self.winner
        ready: dict[str, tuple[Genome | None, dict, bool]] = {}  # variant -> genome, hparams, train_scales
        if best:
            ready["stage1"] = (best[0], c.hparams, False)
        for variant, study, genome in (("stage2", OWN_ACTIVATION, None), (SAFS, SAFS, best and best[0])):
            stream = self.hpo[study]
            if stream is not None and stream.finished and stream.best:
                ready[variant] = (genome, self._hparams(stream.best[0]), True)
        for variant in FINAL_VARIANTS:
            done = self.count(Stage.FINAL, variant)
            if variant in ready and done < len(self.seeds):
                genome, hparams, train_scales = ready[variant]
                return self._emit(Stage.FINAL, variant, genome=genome, hparams=hparams, epochs=c.final_epochs,
                                  train_scales=train_scales, seed=self.seeds[done])
        return None

    def _emit(self, stage: Stage, variant: str, genome: dict | None = None, hparams: dict | None = None,
              epochs: int = 1, train_scales: bool = False, data_fraction: float = 1.0,
              seed: int | None = None) -> Job:
        job = Job(JobSpec(self.next_id, stage, variant, self.config.workspace,
                          genome_to_string(genome) if genome else "", dict(hparams or {}), train_scales, epochs,
                          data_fraction, self.config.seed if seed is None else seed))
        self.jobs[job.id] = job
        self.next_id += 1
        return job

    def tell(self, job_id: int, result: JobResult) -> None:
        """Record a job's outcome (a failed or lost job too: it scores 0)."""
        if job_id not in self.jobs:
            raise KeyError(f"unknown job {job_id}")
        if job_id in self.results:
            return  # a duplicate report (e.g. replayed on resume): already folded
        job = self.jobs[job_id]
        self.results[job_id] = result
        self._remember(job, result)
        if job.stage == Stage.PREPARE and not result.succeeded:
            self.failure = f"the prepare trial failed: {result.reason or result.status.value} (see its trial log)"
        elif job.stage == Stage.SEARCH and job.variant == CONFIRM:
            scores = self.confirm_scores()
            if scores is not None and not any(any(values) for values in scores.values()) and not self.failure:
                self.failure = "every stage-1 confirmation run failed (see their trial logs)"
        elif job.stage == Stage.SEARCH:
            self.search.tell(job.stream_key, self._search_fitness(result))
            self._check_search()
        elif job.stage == Stage.HPO:
            study = study_of(job.variant)
            stream = self.hpo[study]
            stream.tell(job.stream_key, result.fitness())
            if stream.finished and not stream.best and not self.failure:
                self.failure = (f"every trial of the stage-2 study '{study}' failed "
                                f"({stream.n_trials} trials scored 0; see their trial logs)")

    def _search_fitness(self, result: JobResult) -> float:
        return result.fitness(SCORE_KEYS[self.config.search_score])

    def _check_search(self) -> None:
        if self.search.finished and self.search.best is None and not self.failure:
            self.failure = (f"every stage-1 candidate failed ({self.count(Stage.SEARCH)} evaluations scored 0; "
                            "see their trial logs)")
        if self._confirm is None and self.config.confirms and self.search.finished and self.search.best:
            # fixed now: results of search jobs still running when the search stopped change nothing
            own = genome_to_string({slot: self.own_activation for slot in self.slot_names})
            ranked = [genome for genome, _ in sorted(self._measured, key=lambda measured: -self._search_fitness(
                self._measured[measured]))]
            self._confirm = candidates(ranked, own, self.config.confirm_top, self.config.confirm_uniform)

    # -- bookkeeping -----------------------------------------------------------------------
    def evaluation_bounds(self) -> tuple[int, int]:
        """(fewest, most) evaluations the whole pipeline makes with this config: one job each, but
        for a genome the search proposes again (:meth:`_search_result`), so at most this many jobs."""
        fixed_low, fixed_high = self._trials_outside_search()
        low, high = self.search.bounds
        most = self.config.confirm_top + self.config.confirm_uniform + 1
        return fixed_low + low + self._confirm_count(1), fixed_high + high + self._confirm_count(most)

    def _confirm_count(self, genomes: int) -> int:
        """Confirmation jobs for this many confirmed genomes (the own activation included)."""
        if not self.config.confirms:
            return 0
        finalists = genomes if self.config.confirm_finalists is None else min(genomes, self.config.confirm_finalists + 1)
        return genomes + finalists * (len(self.confirm_seeds) - 1)

    def total_if_known(self) -> int | None:
        """The exact job count once stage 1 is over, and with ``hpo_promotion`` both stage-2 studies
        (the tuner ends the NNI experiment with it)."""
        if self.failure:
            return len(self.jobs)
        outside, most = self._trials_outside_search()
        if not self.search.finished or outside != most:  # a promoting study's count is known once it ends
            return None
        confirm = self._confirm_count(len(self.confirm_genomes()))
        return outside + self.count(Stage.SEARCH) - self.count(Stage.SEARCH, CONFIRM) + confirm

    def _trials_outside_search(self) -> tuple[int, int]:
        """(fewest, most) of prepare + baselines + both stage-2 studies + the final jobs: a study
        asks ``hpo_trials`` evaluations (fewer when its tuner explored a smaller space), or with
        promotion between that and one per rung for each (exact once the study has ended)."""
        fixed = 1 + len(self.seeds) * (1 + len(FINAL_VARIANTS))
        per_study = [(self.config.hpo_trials, self.config.hpo_trials * len(self.hpo_rungs)) if stream is None
                     else stream.bounds for stream in self.hpo.values()]
        return fixed + sum(low for low, _ in per_study), fixed + sum(high for _, high in per_study)

    def state_dict(self) -> dict:
        """Everything needed to continue after a restart, as JSON-ready data."""
        return assemble(self.state_head(), self.state_logs())

    def state_head(self) -> dict:
        """The state but the parts that only grow (see :mod:`nni_safs.storage.journal`)."""
        return {"next_id": self.next_id, "failure": self.failure, "reused": self.reused, "confirm": self._confirm,
                "search": self.search.state_head(),
                "hpo": {k: None if v is None else v.state_head() for k, v in self.hpo.items()}}

    def state_logs(self, prefix: str = "") -> dict[str, LogView]:
        """Jobs in issue order, results in the order they were told, and the optimizers' logs;
        named by their path in the state, under ``prefix`` where the state is nested in another."""
        parts = [("jobs", LogView(self.jobs.values(), Job.record)),
                 ("results", LogView(self.results.values(), JobResult.to_dict)),
                 *((f"search.{name}", log) for name, log in self.search.state_logs().items())]
        for study, stream in self.hpo.items():
            if stream is not None:
                parts += [(f"hpo.{study}.{name}", log) for name, log in stream.state_logs().items()]
        return {prefix + name: log for name, log in parts}

    def restored(self, state: dict) -> "SafsPipeline":
        """A pipeline of these settings in the saved ``state`` (:meth:`state_dict`)."""
        pipeline = type(self)(self.config, self.slot_names, self.choices, self.hpo_space, self.own_activation,
                              self.studies)
        jobs = [Job(JobSpec.from_params(j["params"]), j["stream_key"]) for j in state["jobs"]]
        pipeline.jobs = {job.id: job for job in jobs}
        results = [JobResult.from_dict(r) for r in state["results"]]
        pipeline.results = {result.job: result for result in results}
        for result in results:
            pipeline._remember(pipeline.jobs[result.job], result)
        pipeline.next_id, pipeline.failure = state["next_id"], state["failure"]
        pipeline.reused = state.get("reused", 0)  # a 0.2.0 state saved before reuse existed
        pipeline._confirm = state.get("confirm")
        pipeline.search = type(pipeline.search).from_state_dict(state["search"])
        pipeline.hpo = {k: None if v is None else self._restored_study(v) for k, v in state["hpo"].items()}
        return pipeline

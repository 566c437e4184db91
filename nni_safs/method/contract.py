"""The job contract: what a trial is asked to run and what it reports, typed once.

A job is a :class:`JobSpec` and its outcome a :class:`JobResult` with an explicit
:class:`Status` (as Optuna's ``TrialState``). They become plain dicts only at the edges: the
parameters NNI hands a trial and the final result it reports (NNI's ``default`` is the
score), and the saved state. Stage and variant names, and the paper column each final
variant fills, are defined here and nowhere else.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping


class Stage(str, Enum):
    """The stages of a SAFS run, in order; every job names its own."""
    PREPARE = "prepare"    # dense training + one-shot pruning into the workspace (one job)
    BASELINE = "baseline"  # magnitude pruning: the pruned net, own activation, dense hyperparameters
    SEARCH = "search"      # stage 1: a genome per job
    HPO = "hpo"            # stage 2: fine-tuning hyperparameters with trainable activation scales
    FINAL = "final"        # the final budget for each of the paper's columns


STAGE_KEYS = tuple(stage.value for stage in Stage)  # the final dict's score per stage (JobResult.to_dict)


class Status(str, Enum):
    """How a job ended: ok, diverged (a NaN loss), failed (it raised), lost (no result came back)."""
    OK = "ok"              # evaluated; the score is its best validation top-1
    DIVERGED = "diverged"  # the loss turned NaN/inf; the score is the best epoch before that
    FAILED = "failed"      # the trial raised; score 0
    LOST = "lost"          # the trial ended without reporting (killed); score 0


OWN_ACTIVATION = "default"  # variant: the model's own activation (ReLU; swish for EfficientNet-B0)
CONFIRM = "confirm"         # variant of a search job that re-scores a top genome (or the own activation)
SAFS = "safs"               # variant: the stage-1 winner with stage-2 hyperparameters
STUDIES = (OWN_ACTIVATION, SAFS)  # the two stage-2 studies: the ablation and SAFS itself
RUNG = "-rung"  # a successive-halving job's variant: its ladder's name, this, its rung


def rung_variant(ladder: str, rung: int) -> str:
    """The variant of a job at ``rung`` of a ladder (``asha-rung0`` in stage 1, ``safs-rung2`` in stage 2)."""
    return f"{ladder}{RUNG}{rung}"


def study_of(variant: str) -> str:
    """The stage-2 study an ``hpo`` job's variant belongs to (``safs-rung1`` and ``safs``: ``safs``)."""
    return variant.split(RUNG)[0]


@dataclass(frozen=True)
class Column:
    """A column of the paper's results table and the jobs that fill it."""

    key: str     # in summary.json
    title: str   # in results.md
    stage: Stage
    variant: str


COLUMNS = (Column("baseline", "magnitude pruning", Stage.BASELINE, OWN_ACTIVATION),
           Column("stage1", "stage 1", Stage.FINAL, "stage1"),
           Column("stage2", "stage 2", Stage.FINAL, "stage2"),
           Column(SAFS, "SAFS", Stage.FINAL, SAFS))
FINAL_VARIANTS = tuple(c.variant for c in COLUMNS if c.stage is Stage.FINAL)


def _canonical(value: Any) -> Any:
    """``value`` with every number as a float and every sequence as a list: settings that went
    through NNI's manager (Node's JSON writes 1.0 as 1) digest as those read from the workspace."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


@dataclass
class JobSpec:
    """What one trial runs (NNI's parameters for it, as :meth:`to_params`)."""

    job: int
    stage: Stage
    variant: str
    workspace: str
    genome: str = ""          # "slot=op;..." ("": the model's own activations)
    hparams: dict[str, Any] = field(default_factory=dict)
    train_scales: bool = False
    epochs: int = 1
    data_fraction: float = 1.0
    seed: int = 0

    def to_params(self) -> dict[str, Any]:
        return {**asdict(self), "stage": self.stage.value}

    def identity(self) -> dict[str, Any]:
        """What the job computes: every field but its number in this run and the workspace's path."""
        return {name: value for name, value in self.to_params().items() if name not in ("job", "workspace")}

    def key(self, settings: Mapping[str, Any]) -> str:
        """A digest of :meth:`identity` and the run's ``settings`` (its config, ``workspace`` left out).

        Stored results are keyed by it, never by the job's number: another run (a second
        experiment on the workspace) numbers its jobs differently, so a number may name a job of
        another spec, while an equal key means the same computation.
        """
        run = {name: value for name, value in settings.items() if name != "workspace"}
        text = json.dumps(_canonical({"job": self.identity(), "run": run}), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> JobSpec:
        missing = [name for name in ("job", "stage", "workspace") if name not in params]
        if missing:
            raise ValueError(f"job parameters lack {', '.join(missing)} (got {sorted(params)}): "
                             "not parameters made by the SAFS tuner")
        known = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        return cls(**{**known, "stage": Stage(params["stage"]), "variant": params.get("variant", "")})


@dataclass
class JobResult:
    """What a job produced: a status, the score the stage optimizes, and its measurements."""

    job: int
    stage: Stage
    status: Status = Status.OK
    score: float = 0.0        # best validation top-1 (0 when failed or lost)
    reason: str = ""          # why it failed, diverged or was lost
    variant: str = ""
    genome: str = ""
    parameter_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # val_acc, test_acc, density, epochs, timings, ...
    key: str = ""             # the :meth:`JobSpec.key` of the job that produced it ("" when unknown)

    @classmethod
    def failed(cls, spec: JobSpec | dict[str, Any], reason: str, status: Status = Status.FAILED) -> JobResult:
        """A job that produced nothing (a trial that raised, or one that died: ``Status.LOST``)."""
        spec = spec if isinstance(spec, JobSpec) else JobSpec.from_params(spec)
        return cls(spec.job, spec.stage, status, 0.0, reason, spec.variant, spec.genome)

    @property
    def succeeded(self) -> bool:
        """It has measurements (a diverged job has those of its epochs before the divergence)."""
        return self.status in (Status.OK, Status.DIVERGED)

    def fitness(self, key: str | None = None) -> float:
        """The score, or the metric ``key`` (e.g. ``late_val_acc``); 0 unless it succeeded."""
        value = self.score if key is None else self.metrics.get(key, self.score)
        ok = self.succeeded and isinstance(value, (int, float)) and math.isfinite(value)
        return float(value) if ok else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The final result NNI receives (``default`` is the score), flat as the portal shows it.

        Beside ``default`` it carries one key per stage (:data:`STAGE_KEYS`): the score under its
        own stage's name, 0 under the others', so the portal's metric selector draws one stage at
        a time. The portal lists only the numeric keys of the first trial (the prepare job) and
        draws a trial that lacks the chosen key at 0 anyway; :meth:`from_dict` drops them again.
        """
        stages = {name: self.score if name == self.stage.value else 0.0 for name in STAGE_KEYS}
        return {**self.metrics, "default": self.score, **stages, "status": self.status.value,
                "reason": self.reason, "job": self.job, "stage": self.stage.value, "variant": self.variant,
                "genome": self.genome, "parameter_id": self.parameter_id, "key": self.key}

    @classmethod
    def from_dict(cls, value: Any, spec: JobSpec | None = None) -> JobResult:
        """A reported final result (a dict from :meth:`to_dict`, or a bare score); identity fields
        it lacks are taken from ``spec``, the job it answers."""
        data = dict(value) if isinstance(value, dict) else {"default": value}
        if spec is not None:
            data = {"job": spec.job, "stage": spec.stage, "variant": spec.variant, "genome": spec.genome, **data}
        score = data.get("default")
        return cls(job=int(data["job"]), stage=Stage(data["stage"]), status=Status(data.get("status", Status.OK)),
                   score=float(score) if isinstance(score, (int, float)) else 0.0, reason=data.get("reason", ""),
                   variant=data.get("variant", ""), genome=data.get("genome", ""),
                   parameter_id=data.get("parameter_id"), key=data.get("key") or "",
                   metrics={k: v for k, v in data.items() if k not in _OWN_KEYS})

    def mismatch(self, spec: JobSpec, key: str) -> str:
        """Why this result does not answer ``spec`` (whose key is ``key``); "" when it does.

        A result is folded in only for the job it was produced for: same stage, variant and
        genome, and, when it names one, the same key (seed, hyperparameters, epochs, settings).
        """
        diffs = [f"{name} {mine!r} (the job's: {theirs!r})"
                 for name, mine, theirs in (("stage", self.stage.value, spec.stage.value),
                                            ("variant", self.variant, spec.variant),
                                            ("genome", self.genome, spec.genome),
                                            ("key", self.key or key, key)) if mine != theirs]
        return f"the result of job {spec.job} has " + ", ".join(diffs) if diffs else ""


_OWN_KEYS = {"default", "status", "reason", "job", "stage", "variant", "genome", "parameter_id", "key", *STAGE_KEYS}

"""What a job runs: fine-tuning and evaluation (:mod:`~nni_safs.training.loop`), the optimizers
torch lacks, and one job from its spec to its result (:mod:`~nni_safs.training.jobs`)."""

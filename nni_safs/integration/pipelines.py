"""The SAFS pipeline of a config, wired to its model, its files and NNI's built-in tuners."""
from __future__ import annotations

from nni_safs.data import check_dataset_files
from nni_safs.integration.nni_tuners import TunerStream, check_tuner_name
from nni_safs.method.pipeline import SafsPipeline
from nni_safs.method.spaces import load_hpo_space
from nni_safs.models import build_model, model_facts
from nni_safs.models.activations import load_op_choices, slots
from nni_safs.settings.config import OWN_STAGE1, SafsConfig


def build_pipeline(config: SafsConfig) -> SafsPipeline:
    """Check every name and file ``config`` refers to, then build the stage machine.

    Raises:
        ValueError: an unknown tuner or op name, or a space file that does not parse.
        DatasetNotFoundError: ``data_root`` lacks the dataset's files.
    """
    check_dataset_files(config.dataset, config.data_root, config.download)
    check_tuner_name(config.hpo_tuner)
    if config.search_algorithm not in OWN_STAGE1:
        check_tuner_name(config.search_algorithm)
    return SafsPipeline(config, list(slots(build_model(config.model))), load_op_choices(config.op_choices),
                        load_hpo_space(config.hpo_space), model_facts(config.model).act, TunerStream)

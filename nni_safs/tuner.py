"""``nni_safs.tuner.SafsTuner``: the name every experiment YAML gives NNI (see
:mod:`nni_safs.integration.tuner`)."""
from nni_safs.integration.tuner import SafsTuner

__all__ = ["SafsTuner"]

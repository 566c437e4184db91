"""``python -m nni_safs.trial``: the trial command every experiment YAML gives NNI (see
:mod:`nni_safs.integration.trial`)."""
from nni_safs.integration.trial import main, run_command

__all__ = ["main"]

if __name__ == "__main__":
    run_command()

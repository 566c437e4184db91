"""``eval "$(python -m nni_safs.manager_host)"``: a shell's NNI manager listens on loopback (see
:mod:`nni_safs.integration.manager_host`)."""
import sys

from nni_safs.integration.manager_host import main

if __name__ == "__main__":
    sys.exit(main())

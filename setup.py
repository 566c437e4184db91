"""Everything is in pyproject.toml but ``nni_safs_loopback.pth``, which must land in site-packages
itself (not in the package) so that a Python started in the environment reads it: see
``nni_safs/integration/manager_host.py``. It goes there as a data file, for regular and editable installs."""
import os
import sysconfig

from setuptools import setup
from setuptools.dist import Distribution


class _Distribution(Distribution):
    def has_data(self) -> bool:
        """setuptools' editable_wheel (< 81) asks ``has_data``, not ``has_data_files``, so it would
        leave data files out of an editable install."""
        return self.has_data_files()


SITE_PACKAGES = os.path.relpath(sysconfig.get_path("purelib"), sysconfig.get_path("data"))
setup(data_files=[(SITE_PACKAGES, ["nni_safs_loopback.pth"])], distclass=_Distribution)

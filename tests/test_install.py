"""The install admits the Python this suite runs on (3.11 here, 3.13 under `.ci/py313`)."""
import platform
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_requires_python_admits_the_python_the_suite_passes_on():
    admitted = SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])
    assert platform.python_version() in admitted, (
        f"pip would refuse nni-safs on Python {platform.python_version()}: requires-python is '{admitted}'")

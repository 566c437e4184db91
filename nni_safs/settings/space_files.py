"""Reading the declarative search-space files shipped in ``search_spaces/`` (or a user's own)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable


def search_space_file(name: str) -> Path:
    """A file of the top-level ``search_spaces/`` folder (installed as package data)."""
    return Path(str(resources.files("nni_safs.search_spaces") / name))


def read_space_file(path: str | Path | None, default: str, what: str,
                    parse: Callable[[str], Any], errors: type[Exception] | tuple) -> tuple[Path, Any]:
    """(the file, its parsed content); a missing or unparsable file is a ValueError naming it."""
    file = Path(path) if path is not None else search_space_file(default)
    try:
        return file, parse(file.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} file {str(file)!r} does not exist") from None
    except errors as err:
        raise ValueError(f"{what} file {str(file)!r} does not parse: {err}") from None

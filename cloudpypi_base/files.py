"""New files with numbered names, for temporaries many processes create side by side."""

from __future__ import annotations

import itertools
import os

#: Numbers this process's files: no random names (``tempfile.mkstemp``'s cost per file),
#: and the process id in the name keeps processes (forked ones too) apart.
_counter = itertools.count()


def create_numbered(folder: str, prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new file ``folder/<prefix><pid>-<n><suffix>`` (0600) open for writing, and its path;
    a name a killed process left is skipped. Raises FileNotFoundError when ``folder`` is missing."""
    while True:
        path = os.path.join(folder, f"{prefix}{os.getpid()}-{next(_counter)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue

"""Typed access to one ini section's strings, the same way for every part of CloudPyPI.

``pypi.config`` reads ``[server]``/``[webui]`` with it, every storage backend
its ``[storage]`` keys and every purger its ``[cdn]`` keys, each passing its
own error class, so an operator sees one grammar everywhere:

- sizes: ``4096``, ``10M``, ``10MB``, ``1GiB``, ``512 k`` (binary units: K = 1024);
- durations: ``30`` (seconds), ``30s``, ``250ms``, ``5m``, ``2h``, ``1d``;
- booleans: ``true/false``, ``yes/no``, ``on/off``, ``1/0``;
- lists: items separated by commas or white space;
- secrets: ``KEY`` itself, or ``KEY_file`` (a file holding it) or ``KEY_env``
  (the name of an environment variable holding it); never more than one;
- paths: ``~`` expanded, relative paths resolved against ``base_dir``
  (the data folder), one way for every key.

Every error names ``[section] key`` and never repeats a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """An invalid setting (the default error); ``key`` names it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_size(text: str) -> int | None:
    """``"10M"`` -> 10485760; None if ``text`` is not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    return int(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower())


def parse_duration(text: str) -> float | None:
    """``"5m"`` -> 300.0, ``"30"`` -> 30.0; None if ``text`` is not a duration."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def format_size(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``100.0 MiB``, ``2.0 GiB`` (binary units): the
    one formatter of upload limits, migrate-storage progress and settings errors."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


class Section:
    """One section's values (strings), read with a type each.

    ``error(message, key)`` builds the exception to raise (default
    SettingError), so a backend raises its own ``StorageMisconfigured`` and a
    purger its ``PurgerMisconfigured``. An empty value counts as unset.
    """

    def __init__(
        self,
        values: Mapping[str, str],
        *,
        name: str,
        base_dir: str | None = None,
        error: Callable[[str, str], Exception] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.values = values
        self.name = name
        self.base_dir = base_dir
        self._error = error or (lambda message, key: SettingError(message, key=key))
        self.environ = os.environ if environ is None else environ

    def error(self, key: str, message: str) -> Exception:
        """The exception for ``key``: ``[section] key: message``."""
        return self._error(f"[{self.name}] {key}: {message}", key)

    def _bad(self, key: str, value: str, expected: str) -> Exception:
        return self.error(key, f"{value!r} is not {expected}")

    def text(self, key: str, default: str = "") -> str:
        """The value stripped, or ``default`` when unset."""
        return (self.values.get(key) or "").strip() or default

    def whole(
        self, key: str, default: int | None, *, low: int | None = None, high: int | None = None
    ) -> int | None:
        """A whole number between ``low`` and ``high`` (inclusive, either optional)."""
        value = self.text(key)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self._bad(key, value, "a whole number") from None
        return self._bounded(key, value, number, low, high)

    def number(
        self, key: str, default: float | None, *, low: float | None = None, high: float | None = None
    ) -> float | None:
        """A decimal number between ``low`` and ``high``."""
        value = self.text(key)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self._bad(key, value, "a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self._bad(key, value, "a finite number")
        return self._bounded(key, value, number, low, high)

    def size(
        self, key: str, default: int | None, *, low: int | None = None, high: int | None = None
    ) -> int | None:
        """Bytes: a whole number, optionally with K, M, G or T (binary, ``KB``/``KiB`` alike)."""
        value = self.text(key)
        if not value:
            return default
        number = parse_size(value)
        if number is None:
            raise self._bad(key, value, "a size (bytes, or a number with K, M, G: 10M, 1GiB)")
        return self._bounded(key, value, number, low, high, format_size)

    def seconds(
        self, key: str, default: float | None, *, low: float | None = None, high: float | None = None
    ) -> float | None:
        """A duration in seconds: a number, or with ms, s, m, h or d (``30s``, ``5m``)."""
        value = self.text(key)
        if not value:
            return default
        number = parse_duration(value)
        if number is None:
            raise self._bad(key, value, "a duration (seconds, or with ms, s, m, h, d: 30s, 5m)")
        return self._bounded(key, value, number, low, high)

    def flag(self, key: str, default: bool) -> bool:
        """true/false, yes/no, on/off, 1/0."""
        value = self.text(key).lower()
        if not value:
            return default
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self._bad(key, value, "true or false")

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        """One of ``choices`` (any case; returned as spelled in ``choices``); ``none`` is unset."""
        value = self.text(key)
        if not value or value.lower() == "none":
            return default
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise self._bad(key, value, "one of " + ", ".join(choices))

    def list(self, key: str, default: tuple[str, ...] = ()) -> list[str]:
        """Items separated by commas or white space."""
        value = self.text(key)
        if not value:
            return list(default)
        return [item for item in re.split(r"[,\s]+", value) if item]

    def url(self, key: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
        """An absolute URL with one of ``schemes``."""
        value = self.text(key)
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise self._bad(key, value, "an " + " or ".join(f"{s}://" for s in schemes) + " URL")
        return value

    def path(self, key: str, default: str = "") -> str:
        """A file or folder: ``~`` expanded, relative to ``base_dir``; "" when unset and no default."""
        value = self.text(key, default)
        if not value:
            return ""
        value = os.path.expanduser(value)
        if self.base_dir is not None:
            value = os.path.join(self.base_dir, value)
        return os.path.abspath(value)

    def secret(self, key: str, *, required: bool = False) -> str | None:
        """``key``, or the content of the file ``key_file`` names, or the variable ``key_env`` names."""
        given = {name: self.text(name) for name in (key, f"{key}_file", f"{key}_env") if self.text(name)}
        if len(given) > 1:
            raise self.error(sorted(given)[-1], f"set only one of {', '.join(sorted(given))}")
        if f"{key}_file" in given:
            full = self.path(f"{key}_file")
            try:
                with open(full, encoding="utf-8") as f:
                    value = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise self.error(f"{key}_file", f"cannot read {full}: {reason}") from None
            if not value:
                raise self.error(f"{key}_file", f"{full} is empty")
            return value
        if f"{key}_env" in given:
            var = given[f"{key}_env"]
            value = (self.environ.get(var) or "").strip()
            if not value:
                raise self.error(f"{key}_env", f"the environment variable {var} is not set")
            return value
        value = (self.values.get(key) or "").strip()
        if not value and required:
            raise self.error(key, f"is required (or {key}_file, or {key}_env)")
        return value or None

    def _bounded(self, key, value, number, low, high, show=str):
        if (low is not None and number < low) or (high is not None and number > high):
            lo = "" if low is None else show(low)
            hi = "" if high is None else show(high)
            span = f"from {lo} to {hi}" if lo and hi else (f"at least {lo}" if lo else f"at most {hi}")
            raise self.error(key, f"{value!r} is out of range ({span})")
        return number

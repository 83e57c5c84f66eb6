"""Reads config.ini (plus CLOUDPYPI_<SECTION>_<KEY> overrides) into frozen values.

Configuration is read once, at the edge; everything below receives plain
values. ``load`` raises ConfigError with a message naming the section and key
for any invalid setting.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

ENV_CONFIG = "CLOUDPYPI_CONFIG"
ENV_PREFIX = "CLOUDPYPI_"
SECTIONS = ("server", "webui", "database", "storage", "cdn")

#: Words that make a setting secret: its value never appears in output
#: (check-config, logs, error pages). ``key`` counts as a whole word or suffix
#: (``key``, ``api_key``), not inside ``surrogate_key_header`` or ``access_key_id``.
SECRET_WORDS = ("password", "secret", "token")


class ConfigError(ValueError):
    """An invalid setting; the message names ``[section] key``."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 8
    #: Processes serving the socket (each with ``threads`` threads).
    workers: int = 1
    data_dir: str = "data"
    #: Seconds after which a crashed upload's leftovers (spooled bodies in
    #: data_dir/tmp, the store's temporaries) are removed at start and by fsck.
    temporaries_max_age: float = 86400.0


@dataclass(frozen=True)
class WebUISettings:
    url: str = ""
    max_upload_size: int = 100 * 1024 * 1024
    site_name: str = "CloudPyPI"
    #: Bytes of rendered pages each process keeps (pypi.index.render_cache); 0 keeps none.
    render_cache_size: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "local"
    #: proxy: /packages/ streams the object through the application;
    #: redirect: 302 to the backend's public URL.
    serve: str = "proxy"
    #: The whole [storage] section, for the backend's own from_config.
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class CDNSettings:
    files_url: str = ""
    purge: str = "none"
    #: The whole [cdn] section: cache-policy values and the purger's own keys.
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    webui: WebUISettings
    database: DatabaseSettings
    storage: StorageSettings
    cdn: CDNSettings
    #: Where the settings came from (None: built-in defaults only).
    source: str | None = None
    #: Every section as read, after environment overrides.
    raw: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def data_dir(self) -> str:
        return self.server.data_dir


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, *, where: str) -> int:
    """``"100M"``, ``"1 GiB"``, ``"4096"`` -> bytes; ConfigError otherwise."""
    m = _SIZE.match(text or "")
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a size (bytes, or a number with K, M, G)")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def _int(text: str, *, where: str, low: int = 0, high: int | None = None) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{where}: {value} is out of range ({low}..{high or 'any'})")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, where: str) -> float:
    """``"86400"``, ``"90s"``, ``"30m"``, ``"12h"``, ``"1d"`` -> seconds; ConfigError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a duration (seconds, or a number with s, m, h, d)")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


def _workers(text: str) -> int:
    """``[server] workers``: a number, or ``auto`` for one per CPU core."""
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _int(text, where="[server] workers", low=1, high=256)


def _url(text: str, *, where: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{where}: {text!r} is not an absolute {'/'.join(schemes)} URL")
    return text


def read_sections(path: str | None, environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The ini file's sections, with CLOUDPYPI_<SECTION>_<KEY> environment overrides applied."""
    parser = configparser.ConfigParser(interpolation=None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"{path}: {exc}") from None
    sections = {name: dict(parser.items(name)) for name in parser.sections()}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                sections.setdefault(section, {})[rest[len(section) + 1 :]] = value
                break
    return sections


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration: ``path``, else $CLOUDPYPI_CONFIG, else built-in defaults."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_CONFIG) or None
    sections = read_sections(path, environ)
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    return build(sections, base_dir=base, source=path)


def build(sections: Mapping[str, Mapping[str, str]], *, base_dir: str, source: str | None = None) -> Config:
    """Validate the sections into a Config; relative paths are resolved against ``base_dir``."""
    srv = sections.get("server", {})
    web = sections.get("webui", {})
    dbs = sections.get("database", {})
    sto = sections.get("storage", {})
    cdn = sections.get("cdn", {})

    data_dir = os.path.abspath(os.path.join(base_dir, srv.get("data_dir") or "data"))
    server = ServerSettings(
        host=srv.get("host") or "127.0.0.1",
        port=_int(srv.get("port", "8080"), where="[server] port", low=0, high=65535),
        threads=_int(srv.get("threads", "8"), where="[server] threads", low=1, high=1024),
        workers=_workers(srv.get("workers", "1")),
        data_dir=data_dir,
        temporaries_max_age=parse_duration(
            srv.get("temporaries_max_age", "1d"), where="[server] temporaries_max_age"
        ),
    )

    url = (web.get("url") or "").strip()
    if url:
        _url(url, where="[webui] url")
    webui = WebUISettings(
        url=url.rstrip("/"),
        max_upload_size=parse_size(web.get("max_upload_size", "100M"), where="[webui] max_upload_size"),
        site_name=web.get("site_name") or "CloudPyPI",
        render_cache_size=parse_size(web.get("render_cache_size", "64M"), where="[webui] render_cache_size"),
    )

    db_url = (dbs.get("url") or "").strip() or "sqlite:///" + os.path.join(data_dir, "cloudpypi.sqlite3")
    scheme = urlsplit(db_url).scheme
    if scheme == "sqlite":
        db_path = db_url[len("sqlite:///") :] if db_url.startswith("sqlite:///") else ""
        if not db_path:
            raise ConfigError(f"[database] url: {db_url!r}: use sqlite:///PATH")
        if db_path != ":memory:" and not os.path.isabs(db_path):
            db_url = "sqlite:///" + os.path.join(base_dir, db_path)
    elif scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "[database] url: must start with sqlite:/// or postgresql:// "
            f"(got {scheme + '://' if scheme else 'no scheme'})"
        )
    database = DatabaseSettings(url=db_url)

    serve = (sto.get("serve") or "proxy").strip()
    if serve not in ("proxy", "redirect"):
        raise ConfigError(f"[storage] serve: {serve!r} must be proxy or redirect")
    storage = StorageSettings(
        backend=(sto.get("backend") or "local").strip(),
        serve=serve,
        options=MappingProxyType(dict(sto)),
    )

    files_url = (cdn.get("files_url") or "").strip()
    if files_url:
        _url(files_url, where="[cdn] files_url")
        files_url = files_url.rstrip("/") + "/"
    cdn_settings = CDNSettings(
        files_url=files_url,
        purge=(cdn.get("purge") or "none").strip(),
        options=MappingProxyType(dict(cdn)),
    )

    return Config(
        server=server,
        webui=webui,
        database=database,
        storage=storage,
        cdn=cdn_settings,
        source=source,
        raw=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in sections.items()}),
    )


def is_secret(key: str) -> bool:
    """Whether a setting's value must be masked when shown."""
    k = key.lower()
    if k.endswith("_file"):
        return False
    return any(word in k for word in SECRET_WORDS) or k == "key" or k.endswith("_key")


def mask_url(url: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def masked(value: str, key: str) -> str:
    """The value as it may be shown to a person."""
    if is_secret(key):
        return "***" if value else ""
    return mask_url(value) if "://" in value else value

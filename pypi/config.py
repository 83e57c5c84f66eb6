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

from cloudpypi_base.settings import Section
from pypi.proxies import parse_networks

ENV_CONFIG = "CLOUDPYPI_CONFIG"
ENV_PREFIX = "CLOUDPYPI_"
SECTIONS = ("server", "webui", "database", "storage", "cdn", "upstream", "access")

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
    #: Processes serving the socket (each with ``threads`` threads); default one per core.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Seconds a stopping or reloading worker has to finish its requests in flight.
    graceful_timeout: int = 120
    #: Seconds an idle keep-alive connection stays open.
    keepalive: int = 5
    data_dir: str = "data"
    #: Seconds after which a crashed upload's leftovers (spooled bodies in
    #: data_dir/tmp, the store's temporaries) are removed at start and by fsck.
    temporaries_max_age: float = 86400.0
    #: Proxies (addresses or CIDR networks) whose X-Forwarded-* headers are believed; none by
    #: default (pypi.proxies).
    trusted_proxies: tuple[str, ...] = ()
    #: Each worker's main thread answers kept-alive /simple/ and JSON API requests from pages
    #: already rendered for the current serial (pypi.inline; with a database on this host:
    #: SQLite, PostgreSQL over loopback or a Unix socket); false: every request on a thread.
    inline_answers: bool = True


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
    #: PostgreSQL pool: seconds a connection may stay idle, and live, before it is replaced.
    pool_max_idle: int = 600
    pool_max_lifetime: int = 3600


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
class UpstreamSettings:
    """``[upstream]``: mirror or proxy another index (docs/upstream.md)."""

    url: str = ""
    #: off | proxy | mirror
    mode: str = "off"
    #: Names or globs taken from upstream (empty: all) and never taken.
    projects: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: Exact names that may show upstream files although they exist locally.
    allow_shadowing: tuple[str, ...] = ()
    timeout: float = 10.0
    #: Seconds a proxied page is trusted before upstream is asked again.
    page_ttl: int = 300
    username: str = ""
    password: str = ""
    prereleases: bool = True
    #: Globs of wheel platform tags to keep (empty: all); sdists are always kept.
    platforms: tuple[str, ...] = ()
    #: Keep only the newest N releases of each project (0: all).
    latest: int = 0
    #: Skip files larger than this many bytes (0: no cap).
    max_file_size: int = 0
    #: Read a file whose size upstream does not declare (PEP 503 HTML carries none) up to
    #: this many bytes, then refuse it (0: no limit): a hostile upstream cannot fill the disk.
    max_undeclared_size: int = 4 * 1024**3
    jobs: int = 4
    #: Hosts (``host`` or ``host:port``) besides upstream's own that its file links and
    #: redirects may point to; any other host is never asked (SSRF).
    file_hosts: tuple[str, ...] = ("files.pythonhosted.org",)


@dataclass(frozen=True)
class AccessSettings:
    """``[access]``: who may read, signed file URLs, failed-login throttling."""

    #: public: anyone reads public projects; authenticated: every read needs credentials.
    read: str = "public"
    #: Seconds a signed file URL (S3, Swift TempURL, CloudFront) stays valid.
    signed_url_expires: int = 300
    #: Failed logins a client address may make in a burst, and one more every
    #: ``login_refill_seconds``; beyond, 429 with Retry-After (per process).
    login_burst: int = 10
    login_refill_seconds: float = 6.0
    #: Failed logins for one username before each further check is delayed
    #: by ``login_user_delay`` seconds (delayed, never locked out).
    login_user_burst: int = 5
    login_user_delay: float = 1.0


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    webui: WebUISettings
    database: DatabaseSettings
    storage: StorageSettings
    cdn: CDNSettings
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    #: Where the settings came from (None: built-in defaults only).
    source: str | None = None
    #: Every section as read, after environment overrides.
    raw: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    access: AccessSettings = field(default_factory=AccessSettings)

    @property
    def data_dir(self) -> str:
        return self.server.data_dir

    @property
    def public_url(self) -> str:
        """The index's absolute URL for links in pages a shared cache keeps (never the request's
        Host or X-Forwarded-*): ``[webui] url``, else the address ``serve`` listens on
        (``localhost`` for a wildcard address)."""
        if self.webui.url:
            return self.webui.url
        host = self.server.host
        if host in ("", "0.0.0.0", "::"):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}"


def _one(where: str, text: str) -> Section:
    """``text`` as the only value of a section, for the shared typed getters
    (``cloudpypi_base.settings``: the grammar storage backends and purgers use too)."""
    section, _, key = where.partition("] ")
    return Section({key: text}, name=section.lstrip("["), error=lambda message, _key: ConfigError(message))


def parse_size(text: str, *, where: str) -> int:
    """``"100M"``, ``"1 GiB"``, ``"4096"`` -> bytes; ConfigError otherwise."""
    key = where.partition("] ")[2]
    value = _one(where, text or "").size(key, None)
    if value is None:
        raise ConfigError(f"{where}: {text!r} is not a size (bytes, or a number with K, M, G)")
    return value


def _int(text: str, *, where: str, low: int = 0, high: int | None = None) -> int:
    key = where.partition("] ")[2]
    value = _one(where, str(text)).whole(key, None, low=low, high=high)
    if value is None:
        raise ConfigError(f"{where}: {text!r} is not a whole number")
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


def _trusted_proxies(text: str) -> tuple[str, ...]:
    """``[server] trusted_proxies``: addresses or CIDR networks, separated by commas or spaces."""
    items = re.split(r"[\s,]+", text.strip()) if text.strip() else []
    try:
        return tuple(str(n) for n in parse_networks(items))
    except ValueError as exc:
        raise ConfigError(f"[server] trusted_proxies: {exc}") from None


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
        workers=_workers(srv.get("workers", "auto")),
        graceful_timeout=_int(srv.get("graceful_timeout", "120"), where="[server] graceful_timeout", low=0),
        keepalive=_int(srv.get("keepalive", "5"), where="[server] keepalive", low=0, high=3600),
        data_dir=data_dir,
        temporaries_max_age=parse_duration(
            srv.get("temporaries_max_age", "1d"), where="[server] temporaries_max_age"
        ),
        trusted_proxies=_trusted_proxies(srv.get("trusted_proxies", "")),
        inline_answers=_bool(srv.get("inline_answers"), where="[server] inline_answers", default=True),
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
    database = DatabaseSettings(
        url=db_url,
        pool_max_idle=_int(dbs.get("pool_max_idle", "600"), where="[database] pool_max_idle", low=1),
        pool_max_lifetime=_int(
            dbs.get("pool_max_lifetime", "3600"), where="[database] pool_max_lifetime", low=1
        ),
    )

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
    key_id, key_file = (cdn.get("signing_key_id") or "").strip(), (cdn.get("signing_key_file") or "").strip()
    if bool(key_id) != bool(key_file):
        raise ConfigError("[cdn] signing_key_id and signing_key_file must be set together")
    if key_file and not os.path.isfile(os.path.join(base_dir, key_file)):
        raise ConfigError(f"[cdn] signing_key_file: {key_file} is not a readable file")
    cdn_settings = CDNSettings(
        files_url=files_url,
        purge=(cdn.get("purge") or "none").strip(),
        options=MappingProxyType(dict(cdn)),
    )

    acc = sections.get("access", {})
    read = (acc.get("read") or "public").strip()
    if read not in ("public", "authenticated"):
        raise ConfigError(f"[access] read: {read!r} must be public or authenticated")

    def _seconds(key: str, default: str) -> float:
        text = (acc.get(key) or default).strip()
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"[access] {key}: {text!r} is not a number of seconds") from None
        if value < 0:
            raise ConfigError(f"[access] {key}: must not be negative")
        return value

    access = AccessSettings(
        read=read,
        signed_url_expires=_int(
            acc.get("signed_url_expires", "300"), where="[access] signed_url_expires", low=1, high=7 * 86400
        ),
        login_burst=_int(acc.get("login_burst", "10"), where="[access] login_burst", low=1),
        login_refill_seconds=_seconds("login_refill_seconds", "6"),
        login_user_burst=_int(acc.get("login_user_burst", "5"), where="[access] login_user_burst", low=1),
        login_user_delay=_seconds("login_user_delay", "1"),
    )

    return Config(
        upstream=_upstream(sections.get("upstream", {}), base_dir),
        access=access,
        server=server,
        webui=webui,
        database=database,
        storage=storage,
        cdn=cdn_settings,
        source=source,
        raw=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in sections.items()}),
    )


def _words(text: str | None) -> tuple[str, ...]:
    return tuple((text or "").replace(",", " ").split())


def _bool(text: str | None, *, where: str, default: bool) -> bool:
    value = (text or "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: {text!r} is not true or false")


def _upstream(ups: Mapping[str, str], base_dir: str) -> UpstreamSettings:
    mode = (ups.get("mode") or "off").strip().lower()
    if mode not in ("off", "proxy", "mirror"):
        raise ConfigError(f"[upstream] mode: {mode!r} must be off, proxy or mirror")
    url = (ups.get("url") or "").strip()
    if url:
        _url(url, where="[upstream] url")
        url = url.rstrip("/") + "/"
    elif mode != "off":
        raise ConfigError(f"[upstream] url: required when mode = {mode}")
    password = ups.get("password") or ""
    password_file = (ups.get("password_file") or "").strip()
    if password_file:
        path = os.path.join(base_dir, password_file)
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"[upstream] password_file: cannot read {path}: {exc.strerror}") from None
    try:
        timeout = float(ups.get("timeout") or 10)
    except ValueError:
        raise ConfigError(f"[upstream] timeout: {ups.get('timeout')!r} is not a number of seconds") from None
    if not 0 < timeout <= 600:
        raise ConfigError("[upstream] timeout: must be between 0 and 600 seconds")
    return UpstreamSettings(
        url=url,
        mode=mode,
        projects=_words(ups.get("projects")),
        exclude=_words(ups.get("exclude")),
        allow_shadowing=_words(ups.get("allow_shadowing")),
        timeout=timeout,
        page_ttl=_int(ups.get("page_ttl", "300"), where="[upstream] page_ttl", low=0),
        username=(ups.get("username") or "").strip(),
        password=password,
        prereleases=_bool(ups.get("prereleases"), where="[upstream] prereleases", default=True),
        platforms=_words(ups.get("platforms")),
        latest=_int(ups.get("latest", "0"), where="[upstream] latest", low=0),
        max_file_size=parse_size(ups.get("max_file_size") or "0", where="[upstream] max_file_size"),
        max_undeclared_size=parse_size(
            ups.get("max_undeclared_size") or "4G", where="[upstream] max_undeclared_size"
        ),
        jobs=_int(ups.get("jobs", "4"), where="[upstream] jobs", low=1, high=256),
        file_hosts=_file_hosts(ups.get("file_hosts")),
    )


def _file_hosts(text: str | None) -> tuple[str, ...]:
    if text is None:
        return UpstreamSettings.file_hosts
    hosts = _words(text)
    for host in hosts:
        try:
            parts = urlsplit("//" + host)
            parts.port  # noqa: B018 (ValueError when it is not a number)
        except ValueError:
            parts = None
        if parts is None or not parts.hostname or parts.path or parts.query or "@" in host:
            raise ConfigError(f"[upstream] file_hosts: {host!r} is not a host or host:port")
    return hosts


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

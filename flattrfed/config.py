"""Settings from FLATTRFED_* variables and an optional TOML file, validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "FLATTRFED_"
CONFIG_FILE_VARIABLE = "FLATTRFED_CONFIG"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)
MIN_SECRET_KEY_LENGTH = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting has a value we cannot use; the message names it and what it accepts."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class Settings:
    """Everything an instance is configured with; built only through load_settings()."""

    base_url: str
    data_dir: Path
    database_url: str
    secret_key: str
    allow_http: bool = False
    currency: str = "EUR"
    fee_bp: int = 0
    budget_min_minor: int = 200
    budget_max_minor: int = 10_000
    allowed_private_addresses: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    registration: str = "open"
    pending_expiry_months: int = 6
    close_grace_hours: int = 24
    settlement_threshold_minor: int = 0
    worker_in_process: bool = True
    log_level: str = "INFO"
    log_format: str = "json"
    instance_name: str = "flattrfed"

    @property
    def host(self) -> str:
        """The public authority (host[:port]) this instance answers to."""
        return urlsplit(self.base_url).netloc

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is named, parsed and documented."""

    name: str
    env: str
    parse: Callable[[str], Any]
    accepted: str
    help: str


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError


def _parse_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        # Only plain ASCII digits: int() would also take "1_000" or other scripts' digits.
        if not re.fullmatch(r"-?[0-9]{1,18}", text.strip()):
            raise ValueError
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError
        return value

    return parse


def _parse_currency(text: str) -> str:
    from flattrfed.money import is_currency

    code = text.strip().upper()
    if not is_currency(code):
        raise ValueError
    return code


def _parse_networks(text: str) -> tuple[Network, ...]:
    networks: list[Network] = []
    for part in text.split(","):
        part = part.strip()
        if part:
            networks.append(ipaddress.ip_network(part, strict=True))
    return tuple(networks)


def _parse_base_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        raise ValueError
    # Port must parse; urlsplit raises ValueError for a bad one.
    _ = parts.port
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _parse_text(text: str) -> str:
    return text.strip()


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "base_url",
        "FLATTRFED_BASE_URL",
        _parse_base_url,
        "an absolute URL with scheme and host, e.g. https://flattr.example or "
        "http://127.0.0.1:8080 (http only with FLATTRFED_ALLOW_HTTP=1); no path",
        "The public URL of this instance; every actor id is built from it.",
    ),
    SettingSpec(
        "allow_http",
        "FLATTRFED_ALLOW_HTTP",
        _parse_bool,
        "1 or 0",
        "Allow an http base URL and http peers. For development and tests only.",
    ),
    SettingSpec(
        "data_dir",
        "FLATTRFED_DATA_DIR",
        lambda text: Path(text.strip()).expanduser(),
        "a directory path",
        "Where the SQLite database and the generated secret key live. Default ./var.",
    ),
    SettingSpec(
        "database_url",
        "FLATTRFED_DATABASE_URL",
        _parse_text,
        "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB",
        "The database. Default: an SQLite file flattrfed.sqlite3 in the data directory.",
    ),
    SettingSpec(
        "secret_key",
        "FLATTRFED_SECRET_KEY",
        _parse_text,
        f"at least {MIN_SECRET_KEY_LENGTH} characters",
        "Signs sessions and CSRF tokens. Generated into DATA_DIR/secret_key on first run.",
    ),
    SettingSpec(
        "currency",
        "FLATTRFED_CURRENCY",
        _parse_currency,
        "an ISO 4217 code such as EUR, USD, SEK",
        "The one currency of this instance; clearing happens only with same-currency peers.",
    ),
    SettingSpec(
        "fee_bp",
        "FLATTRFED_FEE_BP",
        _parse_int(0, 10_000),
        "a whole number of basis points from 0 to 10000 (500 = 5 %)",
        "The instance fee taken from each donor's monthly spend.",
    ),
    SettingSpec(
        "budget_min_minor",
        "FLATTRFED_BUDGET_MIN_MINOR",
        _parse_int(1, 10**15),
        "a positive whole number of minor units (200 = 2.00)",
        "The smallest monthly budget a member may set.",
    ),
    SettingSpec(
        "budget_max_minor",
        "FLATTRFED_BUDGET_MAX_MINOR",
        _parse_int(1, 10**15),
        "a positive whole number of minor units, not below the minimum",
        "The largest monthly budget a member may set.",
    ),
    SettingSpec(
        "allowed_private_addresses",
        "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES",
        _parse_networks,
        "comma-separated CIDRs such as 127.0.0.0/8,::1/128 (empty = none)",
        "Non-public address ranges the federation client may connect to. Default none.",
    ),
    SettingSpec(
        "trusted_proxies",
        "FLATTRFED_TRUSTED_PROXIES",
        _parse_networks,
        "comma-separated CIDRs such as 127.0.0.1/32,::1/128 (empty = none)",
        "Reverse proxies whose X-Forwarded-For names the visitor's address (for the log-in "
        "rate limit). Default none: the header is ignored.",
    ),
    SettingSpec(
        "registration",
        "FLATTRFED_REGISTRATION",
        _parse_choice("open", "approval", "invite", "closed"),
        "open, approval, invite or closed",
        "Who may sign up.",
    ),
    SettingSpec(
        "pending_expiry_months",
        "FLATTRFED_PENDING_EXPIRY_MONTHS",
        _parse_int(1, 120),
        "a whole number of months from 1 to 120",
        "How long a flattr of an unclaimed remote creator waits before it expires.",
    ),
    SettingSpec(
        "close_grace_hours",
        "FLATTRFED_CLOSE_GRACE_HOURS",
        _parse_int(0, 24 * 14),
        "a whole number of hours from 0 to 336",
        "How long after the month's cutoff late Likes are still accepted before the close.",
    ),
    SettingSpec(
        "settlement_threshold_minor",
        "FLATTRFED_SETTLEMENT_THRESHOLD_MINOR",
        _parse_int(0, 10**12),
        "a whole number of minor units, 0 or more (1000 = 10.00)",
        "A net below this between two instances is not paid but carried to the next month.",
    ),
    SettingSpec(
        "worker_in_process",
        "FLATTRFED_WORKER_IN_PROCESS",
        _parse_bool,
        "1 or 0",
        "Run the background worker inside `serve` (default 1). Set 0 when running "
        "`flattrfed worker` processes separately.",
    ),
    SettingSpec(
        "log_level",
        "FLATTRFED_LOG_LEVEL",
        lambda text: _parse_choice("debug", "info", "warning", "error")(text).upper(),
        "debug, info, warning or error",
        "How much is logged.",
    ),
    SettingSpec(
        "log_format",
        "FLATTRFED_LOG_FORMAT",
        _parse_choice("json", "text"),
        "json or text",
        "Log lines as JSON objects (default) or as plain text.",
    ),
    SettingSpec(
        "instance_name",
        "FLATTRFED_INSTANCE_NAME",
        _parse_text,
        "any short text",
        "The name shown on pages and in NodeInfo.",
    ),
)

SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def _read_toml(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(CONFIG_FILE_VARIABLE, f"file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(CONFIG_FILE_VARIABLE, f"cannot read {path}: {error}") from None
    values: dict[str, str] = {}
    for key, value in document.items():
        if key not in SPEC_BY_NAME:
            known = ", ".join(sorted(SPEC_BY_NAME))
            raise ConfigError(f"{path}:{key}", f"unknown setting; known settings: {known}")
        if isinstance(value, bool):
            values[key] = "1" if value else "0"
        elif isinstance(value, list):
            values[key] = ",".join(str(item) for item in value)
        else:
            values[key] = str(value)
    return values


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    create_secret: bool = True,
) -> Settings:
    """Build Settings from the environment (and FLATTRFED_CONFIG's TOML file), or raise ConfigError.

    Environment variables win over the file, so an operator can override one value for one run.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    config_path = env.get(CONFIG_FILE_VARIABLE)
    if config_path:
        raw.update(_read_toml(Path(config_path)))
    for spec in SPECS:
        if spec.env in env:
            raw[spec.name] = env[spec.env]

    parsed: dict[str, Any] = {}
    for name, text in raw.items():
        spec = SPEC_BY_NAME[name]
        try:
            parsed[name] = spec.parse(text)
        except ValueError:
            raise ConfigError(
                spec.env, f"{text!r} is not valid; expected {spec.accepted}"
            ) from None

    data_dir: Path = parsed.get("data_dir", Path("var"))
    parsed["data_dir"] = data_dir
    if "base_url" not in parsed:
        raise ConfigError(
            "FLATTRFED_BASE_URL", f"not set; expected {SPEC_BY_NAME['base_url'].accepted}"
        )
    allow_http: bool = parsed.get("allow_http", False)
    if urlsplit(parsed["base_url"]).scheme == "http" and not allow_http:
        raise ConfigError(
            "FLATTRFED_BASE_URL",
            f"{parsed['base_url']!r} uses http; use https, or set FLATTRFED_ALLOW_HTTP=1 "
            "for development",
        )
    parsed.setdefault("database_url", default_database_url(data_dir))
    _check_database_url(parsed["database_url"])

    low = parsed.get("budget_min_minor", 200)
    high = parsed.get("budget_max_minor", 10_000)
    if low > high:
        raise ConfigError(
            "FLATTRFED_BUDGET_MAX_MINOR",
            f"{high} is below the minimum {low}; expected a maximum not below the minimum",
        )

    if "secret_key" not in parsed:
        parsed["secret_key"] = _stored_secret_key(data_dir, create=create_secret)
    if len(parsed["secret_key"]) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            "FLATTRFED_SECRET_KEY",
            f"too short; expected at least {MIN_SECRET_KEY_LENGTH} characters",
        )
    known = {f.name for f in fields(Settings)}
    return Settings(**{key: value for key, value in parsed.items() if key in known})


def default_database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'flattrfed.sqlite3').resolve()}"


def _check_database_url(url: str) -> None:
    scheme = url.split(":", 1)[0]
    if scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
        raise ConfigError(
            "FLATTRFED_DATABASE_URL",
            f"scheme {scheme!r} is not supported; expected sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER@HOST:PORT/DB",
        )


def _stored_secret_key(data_dir: Path, *, create: bool) -> str:
    path = data_dir / SECRET_KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if not create:
            return ""
    except OSError as error:
        raise ConfigError("FLATTRFED_SECRET_KEY", f"cannot read {path}: {error}") from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # O_EXCL: two processes starting together must not overwrite each other's key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    except OSError as error:
        raise ConfigError(
            "FLATTRFED_DATA_DIR", f"cannot create the secret key in {data_dir}: {error}"
        ) from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def settings_table_markdown() -> str:
    """The admin guide's settings table, generated from SPECS so the docs cannot drift."""
    lines = ["| variable | accepted values | what it does |", "|---|---|---|"]
    for spec in SPECS:
        lines.append(f"| `{spec.env}` | {spec.accepted} | {spec.help} |")
    return "\n".join(lines)

"""Settings are validated at start-up and every bad value is named in one clear line."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flattrfed.config import ConfigError, load_settings, settings_table_markdown


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "FLATTRFED_BASE_URL": "https://flattr.example",
        "FLATTRFED_DATA_DIR": str(tmp_path),
    }
    env.update(extra)
    return env


def test_defaults_give_sqlite_in_data_dir_eur_and_no_private_addresses(tmp_path: Path) -> None:
    settings = load_settings(base_env(tmp_path))
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/flattrfed.sqlite3"
    assert settings.currency == "EUR"
    assert settings.fee_bp == 0
    assert settings.allowed_private_addresses == ()
    assert (settings.budget_min_minor, settings.budget_max_minor) == (200, 10_000)
    assert settings.host == "flattr.example"


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load_settings(base_env(tmp_path)).secret_key
    second = load_settings(base_env(tmp_path)).secret_key
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_secret_key_from_environment_wins(tmp_path: Path) -> None:
    settings = load_settings(base_env(tmp_path, FLATTRFED_SECRET_KEY="k" * 40))
    assert settings.secret_key == "k" * 40
    assert not (tmp_path / "secret_key").exists()


def test_allowed_private_addresses_parse_as_networks(tmp_path: Path) -> None:
    env = base_env(tmp_path, FLATTRFED_ALLOWED_PRIVATE_ADDRESSES="127.0.0.0/8, ::1/128")
    settings = load_settings(env)
    assert settings.allowed_private_addresses == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def test_trusted_proxies_default_to_none_and_parse_as_networks(tmp_path: Path) -> None:
    assert load_settings(base_env(tmp_path)).trusted_proxies == ()
    env = base_env(tmp_path, FLATTRFED_TRUSTED_PROXIES=" 127.0.0.1/32, ::1/128 ,")
    assert load_settings(env).trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    config = tmp_path / "flattrfed.toml"
    config.write_text('trusted_proxies = ["10.0.0.0/8", "192.0.2.1/32"]\n')
    from_file = load_settings(base_env(tmp_path, FLATTRFED_CONFIG=str(config)))
    assert from_file.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )


def test_toml_file_is_read_and_environment_overrides_it(tmp_path: Path) -> None:
    config = tmp_path / "flattrfed.toml"
    config.write_text(
        'currency = "SEK"\nfee_bp = 250\nallowed_private_addresses = ["10.0.0.0/8"]\n'
    )
    env = base_env(tmp_path, FLATTRFED_CONFIG=str(config), FLATTRFED_FEE_BP="100")
    settings = load_settings(env)
    assert settings.currency == "SEK"
    assert settings.fee_bp == 100
    assert settings.allowed_private_addresses == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("variable", "value", "expected_words"),
    [
        ("FLATTRFED_FEE_BP", "abc", "0 to 10000"),
        ("FLATTRFED_FEE_BP", "10001", "0 to 10000"),
        ("FLATTRFED_FEE_BP", "1_000", "0 to 10000"),
        ("FLATTRFED_CURRENCY", "EURO", "ISO 4217"),
        ("FLATTRFED_BASE_URL", "flattr.example", "absolute URL"),
        ("FLATTRFED_BASE_URL", "https://flattr.example/sub/path", "no path"),
        ("FLATTRFED_ALLOWED_PRIVATE_ADDRESSES", "10.0.0.1/8", "CIDRs"),
        ("FLATTRFED_TRUSTED_PROXIES", "127.0.0.1/8", "CIDRs such as 127.0.0.1/32"),
        ("FLATTRFED_TRUSTED_PROXIES", "127.0.0.1/32;10.0.0.0/8", "CIDRs such as 127.0.0.1/32"),
        ("FLATTRFED_TRUSTED_PROXIES", "proxy.example", "CIDRs such as 127.0.0.1/32"),
        ("FLATTRFED_TRUSTED_PROXIES", "::1/129", "CIDRs such as 127.0.0.1/32"),
        ("FLATTRFED_ALLOW_HTTP", "maybe", "1 or 0"),
        ("FLATTRFED_DATABASE_URL", "mysql://x", "postgresql+asyncpg"),
        ("FLATTRFED_SECRET_KEY", "short", "at least 32"),
        ("FLATTRFED_REGISTRATION", "everyone", "open, approval, invite or closed"),
    ],
)
def test_bad_value_names_the_setting_and_what_it_accepts(
    tmp_path: Path, variable: str, value: str, expected_words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(base_env(tmp_path, **{variable: value}))
    assert caught.value.setting == variable
    assert expected_words in str(caught.value)


def test_http_base_url_needs_allow_http(tmp_path: Path) -> None:
    env = base_env(tmp_path, FLATTRFED_BASE_URL="http://127.0.0.1:8080")
    with pytest.raises(ConfigError, match="FLATTRFED_ALLOW_HTTP=1"):
        load_settings(env)
    assert load_settings({**env, "FLATTRFED_ALLOW_HTTP": "1"}).base_url == "http://127.0.0.1:8080"


def test_budget_maximum_below_minimum_is_refused(tmp_path: Path) -> None:
    env = base_env(tmp_path, FLATTRFED_BUDGET_MIN_MINOR="500", FLATTRFED_BUDGET_MAX_MINOR="400")
    with pytest.raises(ConfigError, match="FLATTRFED_BUDGET_MAX_MINOR"):
        load_settings(env)


def test_unknown_setting_in_toml_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "flattrfed.toml"
    config.write_text("curency = 'EUR'\n")
    with pytest.raises(ConfigError, match="curency"):
        load_settings(base_env(tmp_path, FLATTRFED_CONFIG=str(config)))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FLATTRFED_FEE_BP", "-5"),
        ("FLATTRFED_CURRENCY", "XYZ"),
        ("FLATTRFED_BASE_URL", "ftp://x"),
        ("FLATTRFED_ALLOWED_PRIVATE_ADDRESSES", "not-a-network"),
        ("FLATTRFED_TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_command_line_prints_one_line_and_no_traceback(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLATTRFED_")}
    env.update(base_env(tmp_path, **{variable: value}))
    result = subprocess.run(
        [sys.executable, "-m", "flattrfed", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_settings_table_lists_every_operator_variable() -> None:
    table = settings_table_markdown()
    for name in [
        "FLATTRFED_BASE_URL",
        "FLATTRFED_ALLOW_HTTP",
        "FLATTRFED_DATA_DIR",
        "FLATTRFED_DATABASE_URL",
        "FLATTRFED_SECRET_KEY",
        "FLATTRFED_CURRENCY",
        "FLATTRFED_FEE_BP",
        "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES",
        "FLATTRFED_TRUSTED_PROXIES",
    ]:
        assert f"`{name}`" in table

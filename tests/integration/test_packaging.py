"""A plain (non-editable) install carries templates, static files and migrations, and works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from flattrfed.config import settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("flattrfed-*.whl")
    return built


def test_wheel_contains_templates_static_files_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "flattrfed/templates/base.html",
        "flattrfed/templates/index.html",
        "flattrfed/static/flattrfed.css",
        "flattrfed/migrations/env.py",
        "flattrfed/migrations/script.py.mako",
    }
    assert expected <= names
    assert any(name.startswith("flattrfed/migrations/versions/0001_") for name in names)


def test_installed_wheel_migrates_and_serves_pages(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        from aiohttp.test_utils import TestClient, TestServer
        import flattrfed.paths
        templates = flattrfed.paths.TEMPLATES_DIR
        assert templates.is_relative_to(sys.argv[1]), templates
        from flattrfed.cli import main
        assert main(["db", "upgrade"]) == 0
        from flattrfed.app import create_app
        from flattrfed.config import load_settings

        async def run():
            client = TestClient(TestServer(create_app(load_settings())))
            await client.start_server()
            try:
                page = await client.get("/")
                assert page.status == 200, page.status
                assert "flattrfed" in await page.text()
                css = await client.get("/static/flattrfed.css")
                assert css.status == 200
                health = await client.get("/health")
                assert (await health.json())["status"] == "ok"
            finally:
                await client.close()

        asyncio.run(run())
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLATTRFED_")}
    env.update(
        FLATTRFED_BASE_URL="http://127.0.0.1:8080",
        FLATTRFED_ALLOW_HTTP="1",
        FLATTRFED_DATA_DIR=str(tmp_path / "var"),
        FLATTRFED_WORKER_IN_PROCESS="0",
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_admin_guide_settings_table_matches_the_code() -> None:
    guide = (ROOT / "docs" / "admin-guide.md").read_text()
    start = guide.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = guide.index("<!-- settings-table:end -->")
    assert guide[start:end].strip() == settings_table_markdown().strip()

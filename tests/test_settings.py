"""Settings and the command line refuse wrong values with one line naming each."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.scripts import ScriptHolder
from bot.settings import SettingsError, load_settings
from funnel.script.loading import ScriptError
from tests.conftest import ROOT, RU_SCRIPT


def test_every_wrong_value_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            _env_file=None, bot_token="nope", admin_ids="1, x", timezone="Mars/Base",
            tick_seconds=0, database_url="mysql://x",
        )  # fmt: skip
    names = sorted(line.split(":")[0] for line in caught.value.lines)
    assert names == ["ADMIN_IDS", "BOT_TOKEN", "DATABASE_URL", "TICK_SECONDS", "TIMEZONE"]


def test_good_values() -> None:
    settings = load_settings(_env_file=None, admin_ids="1, 2", manager_chat_id="-100123")
    assert settings.admin_ids == frozenset({1, 2}) and settings.manager_chat_id == -100123
    assert settings.is_admin(2) and not settings.is_admin(3)


def test_the_crm_webhook_is_an_http_url_kept_secret() -> None:
    assert load_settings(_env_file=None, crm_webhook_url="").crm_webhook is None
    url = "https://crm.example.com/hooks/leads?token=s3cret"
    settings = load_settings(_env_file=None, crm_webhook_url=url)
    assert settings.crm_webhook == url
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    for wrong in ("crm.example.com/hook?token=s3cret", "ftp://crm.example.com/s3cret", "https://"):
        with pytest.raises(SettingsError) as caught:
            load_settings(_env_file=None, crm_webhook_url=wrong)
        [line] = caught.value.lines
        assert line.startswith("CRM_WEBHOOK_URL: must be an https://") and "s3cret" not in line


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.example.com/hook?token=s3cret",
        "http://10.0.0.5:8080/s3cret",
        "http://[2001:db8::1]/s3cret",
        "HTTP://crm.example.com/s3cret",
        "http://localhost.evil.example/s3cret",
        "http://127.0.0.1.nip.io/s3cret",
    ],
)
def test_the_crm_webhook_is_https_beyond_this_machine(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, crm_webhook_url=url)
    [line] = caught.value.lines
    assert line.startswith("CRM_WEBHOOK_URL: must be https://")
    assert "s3cret" not in line and "example" not in line and "10.0.0.5" not in line


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://127.1.2.3/hook",
        "http://[::1]:9000/hook",
        "http://localhost/hook",
        "http://LocalHost:81/hook",
        "https://crm.example.com/hook",
    ],
)
def test_plain_http_is_accepted_for_loopback_only(url: str) -> None:
    assert load_settings(_env_file=None, crm_webhook_url=url).crm_webhook == url


def test_unset_roles_are_warned_about() -> None:
    bare = load_settings(_env_file=None, bot_token="", admin_ids="", manager_chat_id="")
    assert [w.split(" ")[0] for w in bare.warnings()] == [
        "ADMIN_IDS", "MANAGER_CHAT_ID", "BOT_TOKEN"
    ]  # fmt: skip
    assert "reports" in bare.warnings()[0] and "card" in bare.warnings()[1]
    full = load_settings(
        _env_file=None, bot_token="123456:ABCDEF", admin_ids="5", manager_chat_id="-100123"
    )
    assert full.warnings() == []


def test_check_exits_non_zero_on_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(RU_SCRIPT.read_text(encoding="utf-8").replace("score: 30}", "score: x}", 1))
    run = subprocess.run(
        [sys.executable, "-m", "bot", "check", str(bad)], cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "bad.yaml:" in run.stderr and "score" in run.stderr


async def test_a_failed_reload_keeps_the_last_good_script(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(RU_SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    holder = ScriptHolder(path)
    good = holder.current
    path.write_text("format: 1\nstages: [", encoding="utf-8")
    with pytest.raises(ScriptError):
        await holder.reload()
    assert holder.current is good


def test_offline_settings_never_reach_the_real_crm(tmp_path: Path) -> None:
    real = load_settings(_env_file=None, crm_webhook_url="https://crm.example.com/hook",
                         admin_ids="5", manager_chat_id="-100123")  # fmt: skip
    offline = real.offline("http://127.0.0.1:9", tmp_path / "x.sqlite3", 42, tick_seconds=0.2)
    assert offline.crm_webhook is None and offline.admin_ids == frozenset({42})
    assert offline.telegram_api_url == "http://127.0.0.1:9" and offline.tick_seconds == 0.2
    assert offline.database_url == f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}"
    assert offline.manager_chat_id == -100123 and real.crm_webhook is not None


def test_the_managers_loop_settings_have_sensible_defaults() -> None:
    settings = load_settings(_env_file=None)
    level = settings.service_level
    assert level.take_within == level.escalate_within == timedelta(minutes=15)
    assert level.hours.on(0) == ((600, 1140),) and level.hours.on(5) == ()
    assert settings.manager_silence == timedelta(days=3)
    custom = load_settings(
        _env_file=None, manager_take_minutes="5", manager_escalate_minutes="45",
        manager_hours="Mon-Fri 09:00-18:00, Sat 11:00-15:00", manager_silence_resume="12h",
    )  # fmt: skip
    assert custom.service_level.escalate_within == timedelta(minutes=45)
    assert custom.service_level.hours.on(5) == ((660, 900),)
    assert custom.manager_silence == timedelta(hours=12)


@pytest.mark.parametrize(
    ("field", "value"),
    [("manager_take_minutes", "0"), ("manager_take_minutes", "quarter"),
     ("manager_take_minutes", "99999999"), ("manager_escalate_minutes", "-5"),
     ("manager_hours", "always-ish"), ("manager_hours", "Mon-Fri 19:00-10:00"),
     ("manager_hours", "Mon-Fri 10:00-25:00"), ("manager_hours", "Moon 10:00-19:00"),
     ("manager_hours", "Mon-Fri 10:00-19:00, Wed 12:00-13:00"), ("manager_hours", ""),
     ("manager_silence_resume", "3 days"), ("manager_silence_resume", "0m"),
     ("manager_silence_resume", "30s")],
)  # fmt: skip
def test_a_wrong_managers_loop_value_is_named(field: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{field: value})
    [line] = caught.value.lines
    assert line.startswith(f"{field.upper()}: ") and len(line) < 300


def test_check_exits_non_zero_naming_a_bad_managers_setting() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bot", "check"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "MANAGER_HOURS": "Mon-Fri 10-19"},
    )  # fmt: skip
    assert run.returncode != 0
    assert "MANAGER_HOURS" in run.stderr + run.stdout


def test_script_path_empty_or_a_shipped_name_finds_the_shipped_script_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A service's working directory: no scripts/ folder beside it.
    monkeypatch.chdir(tmp_path)
    shipped = RU_SCRIPT.parent
    for empty in ("", "  "):
        assert load_settings(_env_file=None, script_path=empty).script_path == RU_SCRIPT
    assert load_settings(_env_file=None).script_path == RU_SCRIPT
    for name in ("ru.yaml", "en.yaml"):
        found = load_settings(_env_file=None, script_path=f"scripts/{name}").script_path
        assert found == shipped / name
    # A file of that name in the working directory is the one meant.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "en.yaml").write_text("format: 1\n", encoding="utf-8")
    found = load_settings(_env_file=None, script_path="scripts/en.yaml").script_path
    assert found.resolve() == tmp_path / "scripts" / "en.yaml"
    own = tmp_path / "school.yaml"
    own.write_text("format: 1\n", encoding="utf-8")
    assert load_settings(_env_file=None, script_path=str(own)).script_path == own


@pytest.mark.parametrize("value", ["scripts/fr.yaml", "school.yaml", "/nowhere/school.yaml", "."])
def test_script_path_that_leads_to_no_file_is_named(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, script_path=value)
    [line] = caught.value.lines
    assert line.startswith(f"SCRIPT_PATH: '{value}'"), line
    assert "leave it empty" in line


def test_migrate_refuses_a_script_the_bot_cannot_start_with(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\n", encoding="utf-8")
    database = tmp_path / "leads.sqlite3"
    env = {
        **os.environ,
        "SCRIPT_PATH": str(bad),
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }
    run = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    # 2: the unit's RestartPreventExitStatus, so systemd does not start it again and again.
    assert run.returncode == 2 and run.stdout == ""
    *problems, last = run.stderr.splitlines()
    assert problems and all(p.startswith(f"{bad}:1: ") for p in problems)
    assert last.startswith("settings: SCRIPT_PATH: the bot cannot start with this script")
    assert not database.exists()


def test_script_path_behind_a_folder_this_user_cannot_enter_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What stat() says for /root/school.yaml to the service's user (the tests may run as root).
    def refuse(path: Path, **_: object) -> bool:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "exists", refuse)
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, script_path="/root/school.yaml")
    assert caught.value.lines == [
        "SCRIPT_PATH: '/root/school.yaml': cannot be reached (Permission denied)"
    ]

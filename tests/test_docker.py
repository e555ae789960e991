"""The Dockerfile and docs/deploy.md's Docker commands, read rather than run (no Docker daemon
where the tests run): the image's user owns the database's folder, which is a volume; the
default database lands in it from the image's working directory; the guide mounts one named
volume there for every container. That the build stage copies enough to build the whole
wheel is shown by tests/wheel.py, which builds the tests' wheel from exactly those files."""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath

from bot.settings import DEFAULT_DATABASE
from tests.guide import guide_block, parse_environment_file

ROOT = Path(__file__).resolve().parent.parent
Instruction = tuple[str, str]


def stages() -> list[list[Instruction]]:
    """Each FROM's instructions (keyword upper-case, the rest with continuations joined)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found: list[list[Instruction]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            found.append([])
        found[-1].append((keyword.upper(), " ".join(rest.split())))
    return found


def values(stage: list[Instruction], keyword: str) -> list[str]:
    return [rest for key, rest in stage if key == keyword]


def volumes(stage: list[Instruction]) -> list[str]:
    folders: list[str] = []
    for rest in values(stage, "VOLUME"):
        folders += json.loads(rest) if rest.startswith("[") else rest.split()
    return folders


def database_folder(url: str, workdir: str) -> PurePosixPath:
    """The folder of a SQLite URL's file inside the container, from its working directory."""
    path = url.partition(":///")[2]
    return (PurePosixPath(workdir) / path).parent


def test_the_image_runs_as_its_user_with_the_database_in_a_volume_it_owns() -> None:
    image = stages()[-1]
    [workdir] = values(image, "WORKDIR")
    [user] = values(image, "USER")
    [volume] = volumes(image)
    assert user == "leadbot" and workdir == "/app"
    # The settings' default and .env.example's both put the database in the volume.
    example = parse_environment_file(ROOT / ".env.example")["DATABASE_URL"]
    for url in (DEFAULT_DATABASE, example):
        assert database_folder(url, workdir) == PurePosixPath(volume), url

    keywords = [key for key, _ in image]
    runs = values(image, "RUN")
    creates = next(r for r in runs if "useradd" in r)
    assert "--system" in creates and creates.split("&&")[1].split()[-1] == user
    owns = next(i for i, (key, rest) in enumerate(image) if key == "RUN" and "chown" in rest)
    chown = next(part.split() for part in image[owns][1].split("&&") if "chown" in part)
    assert chown[1].partition(":")[0] == user and chown[-1] == volume
    # What a build step does to the folder after VOLUME is dropped; the user comes last.
    assert owns < keywords.index("VOLUME") < keywords.index("USER")
    assert values(image, "CMD") == ['["python", "-m", "bot", "run", "--webhook"]']
    assert values(image, "HEALTHCHECK")


def test_the_guide_mounts_one_named_volume_on_the_database_folder_for_every_container() -> None:
    [volume] = volumes(stages()[-1])
    commands = guide_block("Docker")
    [build] = [c for c in commands if c[:2] == ["docker", "build"]]
    image = build[build.index("-t") + 1]
    [created] = [c[3] for c in commands if c[:3] == ["docker", "volume", "create"]]
    runs = [c for c in commands if c[:2] == ["docker", "run"]]
    assert len(runs) == 2
    for run in runs:
        mounts = [run[i + 1] for i, word in enumerate(run) if word in ("-v", "--volume")]
        assert f"{created}:{volume}" in mounts, shlex.join(run)
        assert image in run
    [migrate] = [r for r in runs if r[-4:] == ["python", "-m", "bot", "migrate"]]
    assert "--rm" in migrate

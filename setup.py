"""The wheel's layout: the application's packages, and the two top-level folders it reads at
run time, which stay where people edit them: the migrations and the shipped scripts (the
marketers' `scripts/`). The wheel carries them inside the package as `bot/shipped/`, where
bot/paths.py looks first. Everything else about the project is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

SHIPPED = {"migrations": ["script.py.mako"], "scripts": ["*.yaml", "README.md"]}

setup(
    packages=[
        *find_namespace_packages(include=["bot*", "funnel*", "handlers*"]),
        "bot.shipped.migrations",
        "bot.shipped.migrations.versions",
        "bot.shipped.scripts",
    ],
    package_dir={f"bot.shipped.{folder}": folder for folder in SHIPPED},
    package_data={f"bot.shipped.{folder}": files for folder, files in SHIPPED.items()},
)

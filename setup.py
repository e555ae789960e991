"""The wheel's layout: the application's packages, and the top-level folders it reads at run
time, which stay where people edit them: the migrations and the shipped scripts (the
marketers' `scripts/`), carried inside the package as `bot/shipped/` (bot/paths.py looks
there first), and the bot's text catalogs (`locales/`), carried as `handlers/locales/`
(handlers/i18n.py looks there first). Everything else about the project is in
pyproject.toml."""

from setuptools import find_namespace_packages, setup

SHIPPED = {"migrations": ["script.py.mako"], "scripts": ["*.yaml", "README.md", "README.en.md"]}
# Each folder that holds data is named as a package of its own (`handlers.locales.ru.
# LC_MESSAGES`): setuptools warns about data in a folder it was not told is a package, for
# every file, on every install.
CATALOGS = [
    f"handlers.locales.{name}"
    for name in find_namespace_packages(where="locales")
    if name.endswith(".LC_MESSAGES")
]

setup(
    packages=[
        *find_namespace_packages(include=["bot*", "funnel*", "handlers*"]),
        "bot.shipped.migrations",
        "bot.shipped.migrations.versions",
        "bot.shipped.scripts",
        *CATALOGS,
    ],
    package_dir={
        **{f"bot.shipped.{folder}": folder for folder in SHIPPED},
        "handlers.locales": "locales",
    },
    package_data={
        **{f"bot.shipped.{folder}": files for folder, files in SHIPPED.items()},
        **{catalog: ["*.po"] for catalog in CATALOGS},
    },
)

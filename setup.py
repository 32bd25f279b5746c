"""Overseer: a git-backed job runner."""
import os
import sys

from setuptools import Extension, setup

# The event tool and the bundled example job repository ship as data directories.
DATA_DIRS = ["overseer.library"] + sorted(
    root.replace(os.sep, ".") for root, _dirs, _files in os.walk("overseer/examples")
    if "__pycache__" not in root)

# The native spawn (overseer/process/spawn.py): optional, so that a machine without a C compiler
# still installs, and then starts jobs with subprocess.
SPAWN = Extension("overseer.process._spawn",
                  ["overseer/process/_spawn.c", "overseer/process/_spawn_clone.c"],
                  depends=["overseer/process/_spawn.h"], optional=True, extra_compile_args=["-O2", "-Wall"])

setup(
    name="overseer",
    version="0.1.0",
    description="A git-backed job runner: jobs as YAML/JSON in git, run over REST or on schedules",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    author="Brandon Schlueter",
    author_email="overseer@schlueter.blue",
    license="AGPL-3.0-or-later",
    python_requires=">=3.9",
    packages=["overseer", "overseer.cli", "overseer.http", "overseer.model", "overseer.process", "overseer.repo",
              "overseer.store", "overseer.ui", "overseer.actors", *DATA_DIRS],
    package_dir={"overseer.actors": "actors"},
    ext_modules=[SPAWN] if sys.platform.startswith("linux") else [],
    package_data={"overseer.http": ["openapi.json"], "overseer.ui": ["templates/*.html", "static/*", "static/vendor/*"],
                  **{d: ["*"] for d in DATA_DIRS}},
    include_package_data=False,
    install_requires=[
        "Pykka>=4.0,<5",
        "CherryPy>=18.8,<19",
        "GitPython>=3.1.41,<4",
        "PyYAML>=6.0,<7",
        "Jinja2>=3.1.6,<4",
        "croniter>=2.0,<8",
        "lmdb>=1.4,<4",
        "requests>=2.31,<3",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "ruff>=0.4", "schemathesis>=4.0,<5",
                             "playwright>=1.40"]},
    entry_points={"console_scripts": ["overseer=overseer.cli:main"]},
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: No Input/Output (Daemon)",
        "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Systems Administration",
    ],
)

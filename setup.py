"""Maps the top-level folders onto one import name: streams/ -> vigil.streams, models/ -> vigil.models,
schemas/ -> vigil.schemas. pyproject.toml holds everything else.

This file exists because setuptools' declarative discovery cannot put a prefix in front of
a folder's name; sub-packages are still found automatically, so a new one cannot be left out.
"""
from setuptools import find_packages, setup

FOLDERS = ("streams", "models", "schemas")

packages = ["vigil"]
for folder in FOLDERS:
    packages += [f"vigil.{folder}"] + [f"vigil.{folder}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir={"vigil": "vigil", **{f"vigil.{folder}": folder for folder in FOLDERS}},
    package_data={
        "vigil.schemas": ["manifest.json", "**/*.avsc"],
        "vigil.streams.demo": ["templates/*.j2"],
        "vigil.streams.devtools": ["*.xml"],
    },
)

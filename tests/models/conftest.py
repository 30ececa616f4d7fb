"""Tiny SDXL, SD3 and Flux folders, built once per test session (see tiny_families.py; diffusers is
imported only when a family test asks for a folder, so the other model tests run without it)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory):
    from .tiny_families import saved, sdxl_pipeline

    tmp = tmp_path_factory.mktemp("sdxl")
    pipe = sdxl_pipeline(tmp)
    return pipe, saved(pipe, tmp / "folder")


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory):
    from .tiny_families import saved, sd3_pipeline

    tmp = tmp_path_factory.mktemp("sd3")
    pipe = sd3_pipeline(tmp)
    return pipe, saved(pipe, tmp / "folder")


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory):
    from .tiny_families import flux_pipeline, saved

    tmp = tmp_path_factory.mktemp("flux")
    pipe = flux_pipeline(tmp)
    return pipe, saved(pipe, tmp / "folder")

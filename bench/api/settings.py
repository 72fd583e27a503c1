"""The production settings plus the ceiling's bare views (bench/api/ceiling.py)."""

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api.urls"

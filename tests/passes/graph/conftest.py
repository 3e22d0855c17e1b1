"""Graph-pass tests that compile kernels use a per-session temporary cache folder (never
~/.cache) and run the IR verifier between passes (TESSEL_DEBUG=1)."""

import pytest


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tessel-cache")


@pytest.fixture(autouse=True)
def _cache_and_debug(monkeypatch, session_cache_dir):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(session_cache_dir))
    monkeypatch.setenv("TESSEL_DEBUG", "1")

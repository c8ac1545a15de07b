"""The request loop is `ponder.runtime.run_requests`; the old name `serve` still works for one
release, with a DeprecationWarning (`ponder serve` is kept for the offload server)."""

import pytest

import ponder.runtime
from ponder.runtime._engine.requests import run_requests


def test_run_requests_is_public_and_serve_is_a_deprecated_alias():
    assert ponder.runtime.run_requests is run_requests and "run_requests" in ponder.runtime.__all__
    assert "serve" not in ponder.runtime.__all__
    with pytest.warns(DeprecationWarning, match="renamed run_requests"):
        assert ponder.runtime.serve is run_requests
    with pytest.warns(DeprecationWarning):
        from ponder.runtime import serve
    assert serve is run_requests


def test_unknown_names_still_fail():
    with pytest.raises(AttributeError, match="no attribute 'serv'"):
        ponder.runtime.serv  # noqa: B018

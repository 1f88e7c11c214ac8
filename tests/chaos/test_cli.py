"""`python -m local.chaos --help`: what a newcomer reads first."""

from __future__ import annotations

import pytest

from local.chaos.__main__ import main as chaos_main


def test_chaos_help_names_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        chaos_main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--outage", "--devices", "--fuzz-examples", "--no-fuzz", "--workdir"):
        assert flag in out
    assert "CHAOS" in out

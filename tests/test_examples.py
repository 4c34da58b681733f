"""Every example script runs (with few draws)."""

import importlib.util
import warnings
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_fit_demo_runs(capsys):
    spec = importlib.util.spec_from_file_location("fit_demo", EXAMPLES / "fit_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = module.main(quick=True)
    out = capsys.readouterr().out
    assert "Level 2 [between]" in out and "Latent cluster means" in out
    assert result.summary().free.sum() == 20

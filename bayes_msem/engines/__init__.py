"""Stage 5: engines that turn a :class:`~bayes_msem.spec.ModelSpec` into a PyMC model.

- ``latent`` (:mod:`.latent`): cluster effects are explicit random variables.
- ``collapsed`` (:mod:`.collapsed`): cluster effects are integrated out exactly and
  drawn after sampling; exact where they are conditionally Gaussian.

This module stays free of heavy imports: ``Model`` uses it to choose an engine.
"""

from __future__ import annotations

ENGINES = ("auto", "latent", "collapsed")


def collapsed_supported(spec) -> tuple[bool, str]:
    """Whether the collapsed engine is exact for this model, and why (shown to users)."""
    if not spec.table.two_level:
        return False, "a single-level model has no cluster effects to integrate out"
    if spec.within.slopes_on_nodes:
        return False, ("a random slope on a modelled within variable (a latent within part or a factor) makes "
                       "the cluster effects enter non-linearly, so they are sampled")
    return True, "cluster effects are conditionally Gaussian, so they are integrated out exactly"


def choose_engine(engine: str, spec) -> tuple[str, str]:
    """Resolve ``engine="auto"``: return the engine and the reason shown in the summary."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}")
    supported, why = collapsed_supported(spec)
    if engine == "collapsed" and not supported:
        raise ValueError(f"engine='collapsed' does not apply here: {why}. Use engine='latent'.")
    if engine == "latent":
        return engine, "chosen with engine='latent'"
    return ("collapsed" if supported else "latent"), why

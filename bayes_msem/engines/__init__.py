"""Stage 5: engines that turn a :class:`~bayes_msem.spec.ModelSpec` into a PyMC model.

- ``latent`` (:mod:`.latent`): cluster effects are explicit random variables.
- ``collapsed`` (:mod:`.collapsed`): cluster effects are integrated out exactly and
  drawn after sampling; exact where they are conditionally Gaussian.

Both stand behind one small interface, :class:`Engine`, so that
:meth:`~bayes_msem.model.Model.fit` asks the chosen engine, never tests which
one it has: which models it supports and why, the PyMC model, how numpyro
should run its chains, the cluster effects after sampling, and the
log-likelihood per unit (cluster, or row) for LOO.

This module stays free of heavy imports (the engines' modules are imported
inside the methods): ``Model`` uses it to choose an engine.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ENGINES", "Engine", "LatentEngine", "CollapsedEngine", "choose_engine", "collapsed_supported",
           "get_engine"]


MAX_IMPORTANCE_DRAWS = 1000  # draws (all chains) for LOO where it needs importance sampling per draw


class Engine:
    """What :meth:`~bayes_msem.model.Model.fit` asks of an engine."""

    name = ""

    def supports(self, spec) -> tuple[bool, str]:
        """Whether this engine can fit the model, and why (shown in the summary)."""
        raise NotImplementedError

    def build(self, spec, sampler: str):
        """The PyMC model, with a deterministic ``parameters`` (dim ``parameter``),
        for the sampler backend ``sampler`` (``"numpyro"``, ``"pymc"``, ``"nutpie"``)."""
        raise NotImplementedError

    def sampled_variables(self, spec) -> list[str]:
        """The model variables kept from sampling."""
        return ["parameters"]

    def chain_method(self, spec) -> str:
        """How numpyro runs the chains: ``"vectorized"`` (vmap on one device),
        ``"sequential"``, or ``"parallel"`` (one JAX device per core); see
        :func:`~bayes_msem.sampling.run_nuts`.

        ``"parallel"`` for every engine and model measured (session 8, 2 cores,
        4 chains x 2000 iterations, fit alone): Demo.twolevel collapsed 24.7 s
        vectorized -> 12.6 s parallel, latent 72.6 -> 24.9 s; the random-slope
        mediation, latent engine: 241 s vectorized, 109 s sequential, 94 s parallel.
        Vectorized chains wait for the slowest chain at every step."""
        return "parallel"

    def curvature_start(self, spec) -> bool:
        """Whether numpyro's warm-up starts from the curvature's inverse mass
        matrix (:mod:`bayes_msem.mass_matrix`) rather than the identity: only
        where that was measured to pay for its compilation."""
        return False

    def cluster_effects(self, spec, posterior, random_seed: int | None):
        """Every cluster's effects per draw, an xarray DataArray with dims
        (chain, draw, cluster, cluster_variable), or None in a single-level
        model; in a three-level model a dict of the level-2 ``cluster_effects``
        and the level-3 ``unit_effects``."""
        raise NotImplementedError

    def loo_draw_step(self, spec, n_draws: int) -> int:
        """Take every k-th draw for the pointwise log-likelihood (1: all). Two-level
        ordinal models integrate each cluster's effects by importance sampling,
        Newton steps and 32-64 likelihood evaluations per draw, so they use at most
        ``MAX_IMPORTANCE_DRAWS`` draws."""
        if spec.table.ordinal and spec.layout.multilevel:
            return -(-n_draws // MAX_IMPORTANCE_DRAWS)
        return 1

    def unit_log_likelihood(self, spec, theta_draws, effect_draws=None, unit_effect_draws=None):
        """log p(data of a unit | parameters), (chains, draws, units): per cluster
        with the cluster effects integrated out, per row in a single-level model,
        per row given its units' sampled effects in a cross-classified one;
        None where it cannot be computed. ``effect_draws`` (chains, draws,
        clusters, effects), the sampled cluster effects, start the importance
        sampling of two-level ordinal models; with ``unit_effect_draws`` (the
        second classification's) they give a crossed row's means."""
        if spec.table.ordinal:  # per row in closed form; per cluster by importance sampling
            if spec.layout.multilevel:
                if effect_draws is None:
                    return None
                from bayes_msem.engines.ordinal_clusters import ordinal_cluster_log_likelihood

                return ordinal_cluster_log_likelihood(spec, theta_draws, effect_draws)
            from bayes_msem.engines.ordinal import ordinal_row_log_likelihood

            return ordinal_row_log_likelihood(spec, theta_draws)
        if spec.data.crossed:  # the likelihood does not factor over either classification's units
            from bayes_msem.checking import crossed_row_log_likelihood

            return crossed_row_log_likelihood(spec, theta_draws, effect_draws, unit_effect_draws)
        if spec.layout.multilevel and not collapsed_supported(spec)[0]:
            return None
        if len(spec.layout.levels) > 2:  # per level-3 unit
            from bayes_msem.engines.collapsed import three_level_unit_log_likelihood

            return three_level_unit_log_likelihood(spec, theta_draws)
        if spec.data.has_missing:
            from bayes_msem.engines.missing import missing_unit_log_likelihood

            return missing_unit_log_likelihood(spec, theta_draws)
        if not spec.layout.multilevel:
            from bayes_msem.checking import row_log_likelihood

            return row_log_likelihood(spec, theta_draws)
        from bayes_msem.engines.collapsed_slopes import cluster_log_likelihood

        return cluster_log_likelihood(spec, theta_draws)


def _missing_level_two_outcomes(spec) -> str | None:
    """Why the latent engine cannot take this model's missing level-2 outcomes, or None."""
    from bayes_msem.engines.latent import outcomes_predicting_effects

    holes = np.isnan(spec.data.between_outcomes).any(axis=0)
    if not holes.any():
        return None
    outcomes = list(spec.layout.levels[1].outcomes)
    missing = [name for name, hole in zip(outcomes, holes) if hole]
    predicting = [name for name in outcomes_predicting_effects(spec) if name in missing]
    if predicting:
        return (f"missing values of the level-2 outcome(s) {', '.join(predicting)}, which predict a cluster effect: "
                "the latent engine takes missing level-2 outcomes that predict nothing")
    return None


PARALLEL_LATENT_ROWS = 5000  # the latent engine's chains run in parallel up to this many rows
CURVATURE_START_ROWS = 500  # two-level ordinal factor models from this many rows start warm-up from the curvature


class LatentEngine(Engine):
    """Cluster effects sampled as random variables (:mod:`.latent`)."""

    name = "latent"

    def supports(self, spec) -> tuple[bool, str]:
        from bayes_msem.engines.latent import outcome_coupling
        from bayes_msem.engines.ordinal import ordinal_unsupported

        if spec.data.crossed:
            from bayes_msem.engines.crossed import crossed_supported

            return crossed_supported(spec)
        if len(spec.layout.levels) > 2:
            return False, "the latent engine takes two levels; three-level models are fitted by the collapsed engine"
        problem = outcome_coupling(spec) or ordinal_unsupported(spec)
        if problem:
            return False, problem
        problem = _missing_level_two_outcomes(spec)
        if problem:
            return False, problem
        return True, "cluster effects are sampled as random variables"

    def build(self, spec, sampler: str):
        from bayes_msem.engines.crossed import build_crossed_model
        from bayes_msem.engines.latent import build_latent_model

        return build_crossed_model(spec) if spec.data.crossed else build_latent_model(spec)

    def sampled_variables(self, spec) -> list[str]:
        if spec.data.crossed:
            return ["parameters", "cluster_effects", "unit_effects"]
        return ["parameters"] + (["cluster_effects"] if spec.layout.multilevel else [])

    def chain_method(self, spec) -> str:
        # Per-row work, which XLA spreads over the cores itself once there are
        # many rows: the random-slope mediation at 500 x 20 took 247 s with
        # sequential chains and over 360 s parallel (session 8, 2 x 300 draws);
        # at 2250 rows parallel won (94 against 109 s). The crossover lies in
        # between and is not measured more finely.
        return "parallel" if spec.data.n_rows <= PARALLEL_LATENT_ROWS else "sequential"

    def curvature_start(self, spec) -> bool:
        # Measured on the two-level CFA of six ordinal items (60 x 15, one chain
        # of 300 + 300): warm-up gradients -58 to -63% on four data sets, the
        # sampling's trajectories as long as from the identity. Its cost, a
        # second compilation of about the gradient's time (10-20 s), pays only
        # where the warm-up integrates factors per row over many rows.
        from bayes_msem.engines.ordinal import ordinal_layout

        return (spec.layout.multilevel and bool(spec.table.ordinal) and not spec.data.crossed
                and spec.data.n_rows >= CURVATURE_START_ROWS and len(ordinal_layout(spec).row_factors) > 0)

    def cluster_effects(self, spec, posterior, random_seed: int | None):
        if spec.data.crossed:
            return {"cluster_effects": posterior["cluster_effects"], "unit_effects": posterior["unit_effects"]}
        return posterior["cluster_effects"] if spec.layout.multilevel else None


class CollapsedEngine(Engine):
    """Cluster effects integrated out, drawn after sampling (:mod:`.collapsed`)."""

    name = "collapsed"

    def supports(self, spec) -> tuple[bool, str]:
        return collapsed_supported(spec)

    def build(self, spec, sampler: str):
        from bayes_msem.engines.collapsed import build_collapsed_model

        return build_collapsed_model(spec, jax_likelihood=sampler == "numpyro")

    def cluster_effects(self, spec, posterior, random_seed: int | None):
        import xarray as xr

        from bayes_msem.engines.collapsed import draw_cluster_effects
        from bayes_msem.engines.missing import draw_missing_cluster_effects

        if not spec.layout.multilevel:
            return None
        parameters = posterior["parameters"]
        if len(spec.layout.levels) > 2:
            return _three_level_effects(spec, parameters, random_seed)
        draw = draw_missing_cluster_effects if spec.data.has_missing else draw_cluster_effects
        draws = draw(spec, parameters.values, random_seed)
        return xr.DataArray(draws, dims=("chain", "draw", "cluster", "cluster_variable"), coords={
            "chain": parameters["chain"].values, "draw": parameters["draw"].values,
            "cluster": [str(c) for c in spec.data.cluster_labels],
            "cluster_variable": list(spec.layout.levels[1].effects)})


def _three_level_effects(spec, parameters, random_seed: int | None) -> dict:
    """A three-level model's effects per draw: ``cluster_effects`` (level 2,
    dims chain, draw, cluster, cluster_variable) and ``unit_effects`` (level 3,
    dims chain, draw, unit, unit_variable)."""
    import xarray as xr

    from bayes_msem.engines.collapsed import draw_three_level_effects

    middle, top = draw_three_level_effects(spec, parameters.values, random_seed)
    coords = {"chain": parameters["chain"].values, "draw": parameters["draw"].values}
    levels = spec.layout.levels
    return {
        "cluster_effects": xr.DataArray(middle, dims=("chain", "draw", "cluster", "cluster_variable"), coords={
            **coords, "cluster": [str(c) for c in spec.data.cluster_labels],
            "cluster_variable": list(levels[1].effects)}),
        "unit_effects": xr.DataArray(top, dims=("chain", "draw", "unit", "unit_variable"), coords={
            **coords, "unit": [str(c) for c in spec.data.upper_levels[0].labels],
            "unit_variable": list(levels[2].effects)})}


ENGINES = {"latent": LatentEngine(), "collapsed": CollapsedEngine()}


def collapsed_supported(spec) -> tuple[bool, str]:
    """Whether the collapsed engine is exact for this model, and why (shown to users)."""
    if spec.data.crossed:
        return False, ("cross-classified: the marginal likelihood is not block diagonal (rows of one unit are "
                       "correlated through units of the other classification), so the effects are sampled")
    if len(spec.layout.levels) > 2:
        return _three_level_supported(spec)
    if spec.table.ordinal:
        return False, ("ordinal variables make the likelihood non-Gaussian, so the cluster effects are sampled and "
                       "the categories enter by their probit probabilities")
    if not spec.layout.multilevel:
        if spec.data.has_missing:
            return True, "missing values: the likelihood of each row's observed values, by missing-data pattern"
        return False, "a single-level model has no cluster effects to integrate out"
    if spec.within.slopes_on_nodes:
        return False, ("a random slope on a modelled within variable (a latent within part or a factor) makes "
                       "the cluster effects enter non-linearly, so they are sampled")
    if spec.data.has_missing:
        return True, ("cluster effects are conditionally Gaussian, so they are integrated out exactly, with the "
                      "missing values by pattern")
    return True, "cluster effects are conditionally Gaussian, so they are integrated out exactly"


def _three_level_supported(spec) -> tuple[bool, str]:
    """The three-level models the collapsed engine takes so far: variables split
    over levels (named at level 1 and above) with covariates at every level."""
    if spec.table.ordinal:
        return False, (f"ordinal variables ({', '.join(spec.table.ordinal)}): three-level models take continuous "
                       "variables so far")
    if spec.within.slopes_on_nodes:
        return False, ("a random slope on a modelled within variable (a latent within part or a factor): "
                       "three-level models take random slopes on observed covariates, so far")
    if spec.between.slopes_on_nodes:
        return False, ("a random slope on a modelled level-2 variable: three-level models take random slopes of "
                       "covariates, so far")
    problem = _three_level_outcomes_problem(spec)
    if problem:
        return False, problem
    return True, ("three levels: the level-2 and level-3 effects are conditionally Gaussian, so they are "
                  "integrated out exactly, level by level")


def _three_level_outcomes_problem(spec) -> str | None:
    """Why a three-level model's variables observed above the rows cannot be
    taken (None where they can): a level-2 outcome with a part at level 3 is
    taken without random slopes and missing values, and no level-2 outcome
    beside slopes that vary over level-3 units."""
    _, classes, top = spec.layout.levels
    split = [name for name in classes.outcomes if name in top.split]
    if split and (spec.within.slopes or top.slope_parts or spec.data.has_missing):
        return (f"{', '.join(split)}, observed at level 2, also named at level 3: a level-2 outcome with a part at "
                "level 3 is taken without random slopes and missing values, so far (name it in the level-2 block "
                "alone, or give it a level-1 part too)")
    if classes.outcomes and top.slope_parts:
        return (f"level-2 outcomes ({', '.join(classes.outcomes)}) beside random slopes that vary over level-3 "
                f"units ({', '.join(top.slope_parts)}): not taken together so far")
    return None


def get_engine(name: str) -> Engine:
    """The engine named ``name`` (``"latent"`` or ``"collapsed"``)."""
    return ENGINES[name]


def choose_engine(engine: str, spec) -> tuple[str, str]:
    """Resolve ``engine="auto"``: return the engine and the reason shown in the summary.
    ``"auto"`` takes the collapsed engine where it is exact, else the latent one."""
    choices = ("auto",) + tuple(ENGINES)
    if engine not in choices:
        raise ValueError(f"engine={engine!r} is not one of {choices}")
    if engine == "auto":
        supported, why = collapsed_supported(spec)
        if supported:
            return "collapsed", why
        latent_ok, latent_why = ENGINES["latent"].supports(spec)
        if not latent_ok:
            raise ValueError(f"no engine fits this model: {why}, and {latent_why}")
        return "latent", why
    supported, why = ENGINES[engine].supports(spec)
    if not supported:
        other = "latent" if engine == "collapsed" else "collapsed"
        raise ValueError(f"engine={engine!r} does not apply here: {why}. Use engine={other!r}.")
    return engine, f"chosen with engine={engine!r}"

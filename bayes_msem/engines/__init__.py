"""Stage 5: engines that turn a :class:`~bayes_msem.spec.ModelSpec` into a PyMC model."""

ENGINES = ("latent",)

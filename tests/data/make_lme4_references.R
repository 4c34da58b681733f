# Reference numbers for tests/test_random_slopes_reference.py (lme4, ML):
#   Rscript tests/data/make_lme4_references.R
library(lme4)
d <- read.csv("tests/data/cross_level.csv")
fit <- lmer(y ~ x * w + (1 + x | cluster), data = d, REML = FALSE)
print(summary(fit)$coefficients, digits = 10)
vc <- as.data.frame(VarCorr(fit))
print(vc, digits = 10)

# References for the ordinal (probit) tests (issue 15). Run from tests/data:
#   Rscript make_ordinal_references.R
# lavaan 0.6-14, lme4 (Debian packages r-cran-lavaan, r-cran-lme4).
library(lavaan)
library(lme4)

# 1. Single-level CFA of five 3-category items, theta parameterization (residual
#    variances of the latent responses fixed at 1, as bayes-msem), WLSMV.
cfa_data <- read.csv("ordinal_cfa.csv")
items <- paste0("u", 1:5)
fit <- cfa("f =~ u1 + u2 + u3 + u4 + u5", data = cfa_data, ordered = items, parameterization = "theta")
est <- parameterEstimates(fit)
est <- est[est$op %in% c("=~", "|", "~~") & !(est$op == "~~" & est$lhs != "f"), c("lhs", "op", "rhs", "est", "se")]
write.csv(est, "ordinal_cfa_lavaan_wlsmv.csv", row.names = FALSE)

# 2. Binary outcome with a random intercept and a random slope of x, probit link,
#    Laplace approximation (glmer's default for this model).
slope_data <- read.csv("binary_random_slope.csv")
g <- glmer(y ~ x + (1 + x | cluster), data = slope_data, family = binomial(link = "probit"))
fixed <- summary(g)$coefficients
vc <- as.data.frame(VarCorr(g))
out <- data.frame(
  quantity = c("intercept", "slope", "var_intercept", "var_slope", "cov_intercept_slope"),
  est = c(fixed["(Intercept)", "Estimate"], fixed["x", "Estimate"],
          vc$vcov[vc$var1 == "(Intercept)" & is.na(vc$var2)], vc$vcov[vc$var1 == "x" & is.na(vc$var2)],
          vc$vcov[!is.na(vc$var2)]),
  se = c(fixed["(Intercept)", "Std. Error"], fixed["x", "Std. Error"], NA, NA, NA))
write.csv(out, "binary_random_slope_glmer.csv", row.names = FALSE)
print(est)
print(out)

# Reference for tests/test_three_level_reference.py's slope of a class covariate over schools (lme4, ML):
#   Rscript tests/data/make_three_level_class_slope_reference.R
library(lme4)
d <- read.csv("tests/data/three_level_class_slope_sim.csv")
m <- lmer(y ~ x + z + w + (1 + z | school) + (1 | class), data = d, REML = FALSE)
fe <- fixef(m); fse <- sqrt(diag(vcov(m)))
pr <- confint(m, method = "profile", oldNames = FALSE); vc <- as.data.frame(VarCorr(m))
print(pr)
se_var <- function(name) (pr[name, 2]^2 - pr[name, 1]^2) / (2 * qnorm(0.975))
a <- vc[vc$grp == "school", ]
sd_i <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "(Intercept)"]); sd_s <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "z"])
r <- "cor_z.(Intercept)|school"
out <- data.frame(
  lhs = c("y", "s", "y", "y", "y", "y", "y", "s", "y"),
  op = c("~1", "~1", "~", "~", "~~", "~~", "~~", "~~", "~~"),
  rhs = c("", "", "x", "w", "y", "y", "y", "s", "s"),
  level = c(3, 3, 1, 3, 1, 2, 3, 3, 3),
  est = c(fe["(Intercept)"], fe["z"], fe["x"], fe["w"], sigma(m)^2, vc$vcov[vc$grp == "class"], sd_i^2, sd_s^2,
          a$vcov[!is.na(a$var2)]),
  se = c(fse["(Intercept)"], fse["z"], fse["x"], fse["w"], se_var("sigma"), se_var("sd_(Intercept)|class"),
         se_var("sd_(Intercept)|school"), se_var("sd_z|school"), (pr[r, 2] - pr[r, 1]) / (2 * qnorm(0.975)) * sd_i * sd_s))
print(out, digits = 10)
write.csv(out, "tests/data/three_level_class_slope_sim_lme4.csv", row.names = FALSE)

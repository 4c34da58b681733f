# Reference for tests/test_three_level_reference.py's random slope over both classifications (lme4, ML):
#   Rscript tests/data/make_crossed_both_slope_reference.R
library(lme4)
d <- read.csv("tests/data/crossed_both_slope_sim.csv")
m <- lmer(y ~ x + z + w + (1 + x | primary) + (1 + x | secondary), data = d, REML = FALSE)
fe <- fixef(m); fse <- sqrt(diag(vcov(m)))
pr <- confint(m, method = "profile", oldNames = FALSE); vc <- as.data.frame(VarCorr(m))
print(pr)
se_var <- function(name) (pr[name, 2]^2 - pr[name, 1]^2) / (2 * qnorm(0.975))
parts <- function(group) {  # variances of intercept and slope, their covariance, and the SEs
  a <- vc[vc$grp == group, ]
  sd_i <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "(Intercept)"]); sd_s <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "x"])
  r <- paste0("cor_x.(Intercept)|", group)
  list(est = c(sd_i^2, sd_s^2, a$vcov[!is.na(a$var2)]),
       se = c(se_var(paste0("sd_(Intercept)|", group)), se_var(paste0("sd_x|", group)),
              (pr[r, 2] - pr[r, 1]) / (2 * qnorm(0.975)) * sd_i * sd_s))
}
p <- parts("primary"); s <- parts("secondary")
out <- data.frame(
  lhs = c("y", "s", "y", "y", "y", "y", "s", "y", "y", "s", "y"),
  op = c("~1", "~1", "~", "~", "~~", "~~", "~~", "~~", "~~", "~~", "~~"),
  rhs = c("", "", "z", "w", "y", "y", "s", "s", "y", "s", "s"),
  level = c(3, 3, 2, 3, 1, 2, 2, 2, 3, 3, 3),
  est = c(fe["(Intercept)"], fe["x"], fe["z"], fe["w"], sigma(m)^2, p$est, s$est),
  se = c(fse["(Intercept)"], fse["x"], fse["z"], fse["w"], se_var("sigma"), p$se, s$se))
print(out, digits = 10)
write.csv(out, "tests/data/crossed_both_slope_sim_lme4.csv", row.names = FALSE)

library(lme4)
d <- read.csv("tests/data/crossed_sim.csv")
d$y[d$x > 1] <- NA
m <- lmer(y ~ x + z + w + (1 | primary) + (1 | secondary), data = d, REML = FALSE)
fe <- fixef(m); fse <- sqrt(diag(vcov(m)))
pr <- confint(m, method = "profile", oldNames = FALSE); vc <- as.data.frame(VarCorr(m))
print(pr)
se_var <- function(name) (pr[name, 2]^2 - pr[name, 1]^2) / (2 * qnorm(0.975))
out <- data.frame(
  lhs = c("y", "y", "y", "y", "y", "y", "y"),
  op = c("~1", "~", "~", "~", "~~", "~~", "~~"),
  rhs = c("", "x", "z", "w", "y", "y", "y"),
  level = c(3, 1, 2, 3, 1, 2, 3),
  est = c(fe["(Intercept)"], fe["x"], fe["z"], fe["w"], sigma(m)^2,
          vc$vcov[vc$grp == "primary"], vc$vcov[vc$grp == "secondary"]),
  se = c(fse["(Intercept)"], fse["x"], fse["z"], fse["w"], se_var("sigma"),
         se_var("sd_(Intercept)|primary"), se_var("sd_(Intercept)|secondary")))
print(out, digits = 10)
cat("rows used:", nobs(m), "\n")
write.csv(out, "tests/data/crossed_sim_holes_lme4.csv", row.names = FALSE)

# Reference for tests/test_three_level_reference.py's random slope over classes and schools (lme4, ML):
#   Rscript tests/data/make_three_level_school_slope_reference.R
# on the complete cases of the same data with y missing where x > 1:
#   Rscript tests/data/make_three_level_school_slope_reference.R holes
# and for the cross-classified slope over both classifications (crossed_both_slope_sim.csv):
#   Rscript tests/data/make_three_level_school_slope_reference.R crossed
library(lme4)
mode <- commandArgs(trailingOnly = TRUE)
holes <- identical(mode, "holes"); crossed <- identical(mode, "crossed")
d <- read.csv(if (crossed) "tests/data/crossed_both_slope_sim.csv" else "tests/data/three_level_school_slope_sim.csv")
if (holes) d$y[d$x > 1] <- NA
groups <- if (crossed) c("primary", "secondary") else c("class", "school")  # levels 2 and 3
m <- lmer(as.formula(sprintf("y ~ x + z + w + (1 + x | %s) + (1 + x | %s)", groups[1], groups[2])), data = d,
          REML = FALSE)
fe <- fixef(m); fse <- sqrt(diag(vcov(m)))
pr <- confint(m, method = "profile", oldNames = FALSE); vc <- as.data.frame(VarCorr(m))
print(pr)
se_var <- function(name) (pr[name, 2]^2 - pr[name, 1]^2) / (2 * qnorm(0.975))
parts <- function(group) {  # variances and covariance of one level's intercepts and slopes, with SEs
  a <- vc[vc$grp == group, ]
  sd_i <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "(Intercept)"]); sd_s <- sqrt(a$vcov[is.na(a$var2) & a$var1 == "x"])
  r <- paste0("cor_x.(Intercept)|", group)
  list(est = c(sd_i^2, sd_s^2, a$vcov[!is.na(a$var2)]),
       se = c(se_var(paste0("sd_(Intercept)|", group)), se_var(paste0("sd_x|", group)),
              (pr[r, 2] - pr[r, 1]) / (2 * qnorm(0.975)) * sd_i * sd_s))
}
k <- parts(groups[1]); s <- parts(groups[2])
out <- data.frame(
  lhs = c("y", "s", "y", "y", "y", "y", "s", "y", "y", "s", "y"),
  op = c("~1", "~1", "~", "~", "~~", "~~", "~~", "~~", "~~", "~~", "~~"),
  rhs = c("", "", "z", "w", "y", "y", "s", "s", "y", "s", "s"),
  level = c(3, 3, 2, 3, 1, 2, 2, 2, 3, 3, 3),
  est = c(fe["(Intercept)"], fe["x"], fe["z"], fe["w"], sigma(m)^2, k$est, s$est),
  se = c(fse["(Intercept)"], fse["x"], fse["z"], fse["w"], se_var("sigma"), k$se, s$se))
print(out, digits = 10)
write.csv(out, if (crossed) "tests/data/crossed_both_slope_sim_lme4.csv" else if (holes)
          "tests/data/three_level_school_slope_sim_holes_lme4.csv" else
          "tests/data/three_level_school_slope_sim_lme4.csv", row.names = FALSE)

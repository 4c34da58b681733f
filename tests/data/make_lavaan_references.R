library(lavaan)
hs <- HolzingerSwineford1939
write.csv(hs[, c("id","school","grade", paste0("x",1:9))], "holzinger_swineford.csv", row.names=FALSE)
m <- ' visual =~ x1 + x2 + x3
       textual =~ x4 + x5 + x6
       speed =~ x7 + x8 + x9 '
f <- cfa(m, hs, meanstructure=TRUE)
pe <- parameterEstimates(f)[,c("lhs","op","rhs","est","se")]
write.csv(pe, "holzinger_swineford_cfa_lavaan_ml.csv", row.names=FALSE)
pd <- PoliticalDemocracy
write.csv(pd, "political_democracy.csv", row.names=FALSE)
m2 <- ' ind60 =~ x1 + x2 + x3
        dem60 =~ y1 + y2 + y3 + y4
        dem65 =~ y5 + y6 + y7 + y8
        dem60 ~ ind60
        dem65 ~ ind60 + dem60
        y1 ~~ y5 '
f2 <- sem(m2, pd, meanstructure=TRUE)
write.csv(parameterEstimates(f2)[,c("lhs","op","rhs","est","se")], "political_democracy_sem_lavaan_ml.csv", row.names=FALSE)
std <- standardizedSolution(f2)[,c("lhs","op","rhs","est.std")]
write.csv(std, "political_democracy_sem_lavaan_std.csv", row.names=FALSE)
# latent auto.cov.y check
m3 <- ' visual =~ x1 + x2 + x3
       textual =~ x4 + x5 + x6
       speed =~ x7 + x8 + x9
       textual ~ visual; speed ~ visual '
print(parTable(sem(m3, hs))[,c("lhs","op","rhs","free")])
# two-level tutorial partable
d <- Demo.twolevel
m4 <- 'level: 1
    fw =~ y1 + y2 + y3
    fw ~ x1 + x2 + x3
level: 2
    fb =~ y1 + y2 + y3
    fb ~ w1 + w2'
f4 <- sem(m4, d, cluster="cluster")
print(parTable(f4)[,c("lhs","op","rhs","level","free","ustart","est")])
library(lavaan)
pd <- PoliticalDemocracy
m <- ' y1 ~ x1
       y5 ~ y1 + x1
       y6 ~ x1 + x2 '
f <- sem(m, pd, meanstructure=TRUE)
write.csv(parameterEstimates(f)[,c("lhs","op","rhs","est","se")], "political_democracy_path_lavaan_ml.csv", row.names=FALSE)
print(parameterEstimates(f)[,c("lhs","op","rhs","est","se")])
# two-level model with partial covariance patterns at both levels (issue 12), lavaan 0.6-14:
# writes demo_twolevel_partial_covariances_lavaan_ml.csv (logL -20123.583)
m5 <- paste(readLines("demo_twolevel_partial_covariances.lavaan"), collapse = "\n")
f5 <- sem(m5, Demo.twolevel, cluster = "cluster")
write.csv(parameterEstimates(f5)[, c("lhs", "op", "rhs", "level", "est", "se")],
          "demo_twolevel_partial_covariances_lavaan_ml.csv", row.names = FALSE)
# equal residual covariances over time and one fixed at a non-zero value (issue 12), lavaan 0.6-14 (logL -1550.357):
# writes political_democracy_constrained_covariances_lavaan_ml.csv
m6 <- paste(readLines("political_democracy_constrained_covariances.lavaan"), collapse = "\n")
f6 <- sem(m6, PoliticalDemocracy)
write.csv(parameterEstimates(f6)[, c("lhs", "op", "rhs", "est", "se")],
          "political_democracy_constrained_covariances_lavaan_ml.csv", row.names = FALSE)

# Issue 16: missing values under MAR by full information (lavaan missing = "ml").
# mar_outcome.csv: made by tests/test_missing_reference.py's docstring recipe (y2, y3 missing where y1 is high)
mar <- read.csv("mar_outcome.csv")
m_mar <- 'level: 1
  fw =~ y1 + y2 + y3
level: 2
  fb =~ y1 + y2 + y3'
f_mar <- sem(m_mar, mar, cluster = "cluster", missing = "ml")
pe <- parameterEstimates(f_mar)
write.csv(pe[, c("lhs","op","rhs","level","est","se")], "mar_outcome_lavaan_ml.csv", row.names=FALSE)
f_lw <- sem(m_mar, mar[complete.cases(mar), ], cluster = "cluster")
pe <- parameterEstimates(f_lw)
write.csv(pe[, c("lhs","op","rhs","level","est","se")], "mar_outcome_lavaan_listwise.csv", row.names=FALSE)

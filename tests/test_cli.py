"""Command line end to end: errors (fast) and a short fit."""

import subprocess
import sys

import pandas as pd
import pytest

import bayes_msem as bm
from bayes_msem.cli import main


def test_bad_model_file_gives_one_clear_error(tmp_path, capsys):
    model = tmp_path / "bad.lavaan"
    model.write_text("f =~ y1 y2\n")
    data = tmp_path / "d.csv"
    bm.example_data().to_csv(data, index=False)
    assert main(["fit", str(model), str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayes-msem: error: line 1, column 9")
    assert "Traceback" not in err


def test_bad_data_file(tmp_path, capsys):
    model = tmp_path / "m.lavaan"
    model.write_text(bm.example_model())
    assert main(["fit", str(model), str(tmp_path / "missing.csv"), "--cluster", "cluster"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "d.txt").write_text("x")
    assert main(["fit", str(model), str(tmp_path / "d.txt")]) == 2
    assert "cannot read d.txt" in capsys.readouterr().err


def test_data_error_names_the_fix(tmp_path, capsys):
    model = tmp_path / "m.lavaan"
    model.write_text(bm.example_model())
    data = tmp_path / "d.csv"
    bm.example_data().to_csv(data, index=False)
    assert main(["fit", str(model), str(data)]) == 2
    assert "needs --cluster COLUMN naming" in capsys.readouterr().err  # the command's option, not Python's cluster=
    holes = bm.example_data().assign(x1=lambda d: d.x1.mask(d.index < 3))
    holes.to_csv(data, index=False)
    assert main(["fit", str(model), str(data), "--cluster", "cluster", "--centering", "x1=cluster-mean"]) == 2
    error = capsys.readouterr().err
    assert "covariate 'x1' has 3 missing value(s): it is a predictor as 'x1." in error
    assert "Pass --missing listwise to drop those rows" in error and "missing=" not in error


def test_ordered_names_ordinal_variables_in_the_commands_words(tmp_path, capsys):
    model = tmp_path / "m.lavaan"
    model.write_text("level: 1\n u ~ x\nlevel: 2\n u ~~ u")
    data = tmp_path / "d.csv"
    pd.DataFrame({"cluster": [1, 1, 2, 2] * 10, "x": range(40), "u": [1.5, 2.0, 1.0, 3.0] * 10}).to_csv(data,
                                                                                                       index=False)
    assert main(["fit", str(model), str(data), "--cluster", "cluster", "--ordered", "u"]) == 2
    error = capsys.readouterr().err
    assert "ordinal variable 'u' has the non-integer value 1.5" in error and "out of --ordered" in error


@pytest.mark.slow
def test_fit_writes_results(tmp_path):
    model = tmp_path / "m.lavaan"  # with a residual covariance, for the diagram's covariance arrows
    model.write_text(bm.example_model("mplus_ex9_6").replace("fw ~ x1 + x2", "fw ~ x1 + x2\n  y1 ~~ y2"))
    data = tmp_path / "d.csv"
    bm.example_data("mplus_ex9_6").to_csv(data, index=False)
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "bayes_msem.cli", "fit", str(model), str(data), "--cluster", "clus",
         "--draws", "100", "--tune", "100", "--chains", "2", "--seed", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert "Level 2 [between]" in completed.stdout
    # quiet: no library notices, and diagnostics in the summary only, not as Python warning lines
    for noise in ("UserWarning", "BLAS", "donated buffers", "FutureWarning"):
        assert noise not in completed.stderr, completed.stderr
    assert "Posterior predictive p-value (PPP)" in completed.stdout
    assert (out / "results.nc").exists() and (out / "summary.csv").exists()
    assert bm.load_result(out / "results.nc").info["cluster"] == "clus"
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 and report.count('<div class="path-diagram"><svg') == 2
    (out / "report.html").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "bayes_msem.cli", "report", str(out / "results.nc")],
                             capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = (out / "report.html").read_text()
    assert 'alt="ppp"' in report and "Prior sensitivity" in report  # the PPP was saved with the result
    _assert_report_renders_in_chromium(out / "report.html", covariances=1)


# Runs in the report's page once loaded; writes what it measured into the title.
REPORT_PROBE = """<script>window.onload = function () {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  const diagrams = document.querySelectorAll('.path-diagram svg');
  const covariances = document.querySelectorAll('.path-diagram [id*="-covariance-"]').length;
  const rect = e => e.getBoundingClientRect();
  const texts = [...document.querySelectorAll('.path-diagram svg text')].map(rect);
  const smallest = Math.min(...texts.map(r => r.height));
  let overlaps = 0;
  diagrams.forEach(svg => {
    const boxes = [...svg.querySelectorAll('[id*="-label-"] path, [id*="-node-"]')].map(rect);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) overlaps++;
    }
  });
  document.title = 'images:' + document.images.length + ' failed:' + bad + ' diagrams:' + diagrams.length +
    ' covariances:' + covariances + ' smallest:' + smallest.toFixed(1) + ' overlaps:' + overlaps +
    ' scroll:' + (document.querySelector('pre').scrollWidth > document.querySelector('pre').clientWidth);
};</script></body>"""


def _assert_report_renders_in_chromium(path, covariances: int):
    """Open the report in headless Chromium (Debian's `chromium`) at 100% zoom
    and check that every image loaded, the path diagrams draw ``covariances``
    covariance arrows, their text is at least 11 px high, no number covers a
    box or another number, and the summary box needs no horizontal scrolling."""
    import re
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    probe = path.with_name("probe.html")
    probe.write_text(path.read_text().replace("</body>", REPORT_PROBE))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = dict(re.findall(r"(\w+):([\w.]+)", re.search(r"<title>(.*?)</title>", dom).group(1)))
    assert found["failed"] == "0" and int(found["images"]) >= 2, found
    assert int(found["diagrams"]) == 2 and int(found["covariances"]) == covariances, found
    assert float(found["smallest"]) >= 11.0, found  # about 7 px before
    assert found["overlaps"] == "0" and found["scroll"] == "false", found


def test_report_of_a_missing_file_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".sav", ".dta"])
def test_every_data_format_reads_back_the_same_frame(tmp_path, suffix):
    import pyreadstat

    from bayes_msem.cli import _read_data

    frame = bm.example_data("mplus_ex9_6").head(50)
    path = tmp_path / f"d{suffix}"
    writers = {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
               ".sav": lambda: pyreadstat.write_sav(frame, str(path)), ".dta": lambda: frame.to_stata(path, write_index=False)}
    writers[suffix]()
    read = _read_data(path)
    pd.testing.assert_frame_equal(read[frame.columns].astype(float), frame.astype(float), check_exact=False, rtol=1e-6)


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_csv_separator_is_sniffed(tmp_path, separator):
    from bayes_msem.cli import _read_data

    frame = bm.example_data("mplus_ex9_6").head(20)
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False, sep=separator)
    pd.testing.assert_frame_equal(_read_data(path), frame, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("y,x\n", "has a header but no rows"),
    ("y,x,y\n1,2,3\n", "more than one column named 'y'"),
])
def test_unreadable_csv_files_give_one_clear_error(tmp_path, capsys, text, words):
    model = tmp_path / "m.lavaan"
    model.write_text("y ~ x")
    data = tmp_path / "d.csv"
    data.write_text(text)
    assert main(["fit", str(model), str(data)]) == 2
    assert words in capsys.readouterr().err


def test_missing_value_codes_are_read_as_missing(tmp_path, capsys):
    from bayes_msem.cli import _read_data

    data = tmp_path / "d.csv"
    data.write_text("y,x\n1.5,-99\n.,2\n3,4\n")
    read = _read_data(data, ["-99", "."])
    assert read.isna().sum().tolist() == [1, 1] and read.dtypes.tolist() == [float, float]
    model = tmp_path / "m.lavaan"
    model.write_text("y ~ x")
    assert main(["fit", str(model), str(data), "--na-values=-99,.", "--missing", "error"]) == 2
    assert "2 of 3 rows have missing values (y: 1, x: 1)" in capsys.readouterr().err


def test_warnings_are_printed_once_in_the_commands_words(capsys):
    import warnings

    from bayes_msem.cli import _print_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for text in ("only 4 clusters in 'id'", "only 4 clusters in 'id'", "R-hat above 1.01 for a"):
            warnings.warn(text, UserWarning, stacklevel=2)
    _print_warnings(caught, shown_in_summary=["R-hat above 1.01 for a"])
    assert capsys.readouterr().err == "bayes-msem: warning: only 4 clusters in 'id'\n"


SIMULATE_MODEL = "level: 1\n  y ~ x\nlevel: 2\n  y ~ w\n"


@pytest.mark.parametrize("extra, values, words", [
    (["--clusters", "30,fifty"], None, "--clusters takes whole numbers"),
    ([], "name,number\ny~x|within,0.3\n", "needs the columns parameter,value"),
    ([], "parameter,value\ny~z|within,0.3\n", "no free parameter named ['y~z|within']"),
    (["--clusters", "1"], None, "a design with 1 cluster"),
])
def test_simulate_refuses_bad_settings_before_starting(tmp_path, capsys, extra, values, words):
    model = tmp_path / "model.lavaan"
    model.write_text(SIMULATE_MODEL)
    options = ["--out", str(tmp_path / "study")] + extra
    if values is not None:
        (tmp_path / "values.csv").write_text(values)
        options += ["--values", str(tmp_path / "values.csv")]
    assert main(["simulate", str(model), *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bayes-msem: error:") and words in error, error


@pytest.mark.slow
def test_simulate_writes_the_study_and_finishes_it_when_run_again(tmp_path):
    model = tmp_path / "model.lavaan"
    model.write_text(SIMULATE_MODEL)
    (tmp_path / "values.csv").write_text("parameter,value\ny~x|within,0.3\ny~w|between,0.4\n")
    command = [sys.executable, "-m", "bayes_msem.cli", "simulate", str(model), "--values", str(tmp_path / "values.csv"),
               "--clusters", "12", "--cluster-size", "4", "--reps", "2", "--draws", "100", "--tune", "100",
               "--workers", "1", "--out", str(tmp_path / "study")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "study" / "summary.csv").set_index("parameter")
    assert summary.loc["y~x|within", "true"] == 0.3 and summary.loc["y~x|within", "replications"] == 2
    report = (tmp_path / "study" / "report.html").read_text()
    assert report.count("data:image/png;base64") == len(summary)
    again = subprocess.run([*command[:command.index("--reps") + 1], "3", *command[command.index("--reps") + 2:]],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    replications = pd.read_csv(tmp_path / "study" / "replications.csv")
    assert sorted(replications.replication.unique()) == [0, 1, 2]


def test_messages_naming_several_cluster_columns_read_as_the_option():
    from bayes_msem.cli import in_cli_words

    assert in_cli_words("as in cluster=['class', 'school']") == "as in --cluster class,school"

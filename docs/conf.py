"""Sphinx configuration: the user guide (Markdown, via MyST) and the API reference
(autodoc from the docstrings). CI builds it with warnings as errors."""

project = "bayes-msem"
author = "bayes-msem developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures show the hints; repeating them in the text adds noise
napoleon_numpy_docstring = True
napoleon_google_docstring = False
copyright = "2026, bayes-msem developers"
html_theme = "pydata_sphinx_theme"  # the theme PyMC and ArviZ use: maintained, readable code blocks
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
suppress_warnings = ["myst.xref_missing"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # code blocks wrap

"""Map environment variables onto Sphinx settings of the book build.

jupyter-book 1.x has no variable interpolation in ``_config.yml``, and ``--config``
replaces the whole file, so build options that differ per run are read here:

``BOOK_TIMEOUT``
    Per-cell execution timeout in seconds (``nb_execution_timeout``), for long runs
    such as the ``paper`` profile on a GPU.
``BOOK_HIDE_SOLUTIONS=1``
    Student edition: sphinx-exercise drops every ``solution`` block.
``BOOK_OFFLINE=1``
    Pages load MathJax from the sphinx-mathjax-offline package and the widget scripts
    from ``book/_offline/vendor`` (written by ``tools/fetch_offline_assets.py``), so a
    browser with no network renders them completely.

Every build also adds ``static/widget-mathjax.js``, which lets the ipywidgets labels
typeset with MathJax 3 (the widget scripts call the MathJax 2 interface).
"""

import os
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError

OFFLINE_ASSETS = Path(__file__).resolve().parent.parent / "book" / "_offline"
STATIC = Path(__file__).resolve().parent / "static"


def _flag(name: str) -> bool:
    """Return whether environment variable `name` is set to ``1``."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise ConfigError(f"{name}={value!r} is invalid: set it to 1 or 0, or unset it.")
    return value == "1"


def _timeout_seconds() -> int | None:
    """Return the ``BOOK_TIMEOUT`` value in seconds, or None when it is unset."""
    value = os.environ.get("BOOK_TIMEOUT", "")
    if not value:
        return None
    if not value.isdigit() or int(value) == 0:
        raise ConfigError(f"BOOK_TIMEOUT={value!r} is invalid: give a positive number of seconds.")
    return int(value)


def _use_local_widget_scripts(config: Config) -> None:
    """Point the ipywidgets scripts of myst-nb at the vendored copies."""
    vendor = OFFLINE_ASSETS / "vendor"
    if not vendor.is_dir():
        raise ConfigError(
            f"BOOK_OFFLINE=1 needs the widget scripts in {vendor}, which is missing: "
            "run `python tools/fetch_offline_assets.py` first."
        )
    config.html_static_path = [*config.html_static_path, str(OFFLINE_ASSETS)]
    config.nb_ipywidgets_js = {
        "vendor/require.js": {},
        "vendor/require-paths.js": {},
        # The attribute names the base URL for widget modules that embed-amd.js does not
        # bundle. The book only uses the bundled controls, so it is never requested.
        "vendor/html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "vendor/"},
    }


def apply_environment(app: Sphinx, config: Config) -> None:
    """Add the static folder and apply BOOK_TIMEOUT, BOOK_HIDE_SOLUTIONS and BOOK_OFFLINE to `config`."""
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    timeout = _timeout_seconds()
    if timeout is not None:
        config.nb_execution_timeout = timeout
    if _flag("BOOK_HIDE_SOLUTIONS"):
        config.hide_solutions = True
    if _flag("BOOK_OFFLINE"):
        _use_local_widget_scripts(config)


def setup(app: Sphinx) -> dict:
    if _flag("BOOK_OFFLINE"):
        # This extension sets mathjax_path to its local MathJax 3 and copies it into the output.
        app.setup_extension("sphinx-mathjax-offline")
    app.connect("config-inited", apply_environment)
    # Before the MathJax configuration script (priority 500), which assigns window.MathJax.
    app.add_js_file("widget-mathjax.js", priority=200)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

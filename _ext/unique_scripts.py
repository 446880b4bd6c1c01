"""Drop repeated script entries from every HTML page.

Sphinx 7.4 keeps a script that an extension adds after the builder started twice:
``app.add_js_file(None, body=...)`` stores it with the file name None, and the builder
adds it again from the registry with the file name ''. Both copies end up on every
page. sphinx-thebe 0.3.1 adds ``const THEBE_JS_URL = ...`` this way, so the second
copy raises "Identifier 'THEBE_JS_URL' has already been declared" in the browser.
"""

from sphinx.application import Sphinx


def drop_repeated_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Keep the first of the page's scripts that agree in file name, priority and attributes."""
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    # Runs after the handlers at the default priority, which may add page scripts.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

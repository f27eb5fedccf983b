"""A Sphinx extension that keeps each script tag of a page only once.

Jupyter Book 1.x loads ``sphinx_thebe``, whose ``env-before-read-docs`` handler adds an inline
script declaring ``const THEBE_JS_URL``. In a Jupyter Book build the script reaches every page
twice (once with the file name ``None``, once with ``""``), so the browser's console showed
``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``; ``tests/test_site.py``
found it. This handler drops the repeats: scripts with the same source and the same attributes.
"""

from __future__ import annotations

from typing import Any


def drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any):
    """Keep the first of equal entries in the page's ``script_files``, in their order.

    Two entries are equal when they load the same file (an inline script has the file name ``None``
    or ``""``, both meaning "none") with the same attributes, the inline body included.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        key = (str(script.filename or ""), tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    """Register the handler after all others (default priority 500): they add scripts too."""
    app.connect("html-page-context", drop_repeated_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

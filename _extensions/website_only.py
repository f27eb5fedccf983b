"""A Sphinx extension that takes the launch buttons off pages that only run as part of the website.

sphinx-book-theme puts the launch buttons (Colab, Binder) on every notebook page; Jupyter Book
1.x has no per-page switch. A page that needs the rest of the repository to run (the "Measured"
appendix reads ``../benchmarks``) would open in Colab or Binder and fail on its first cell. Such
pages are listed in ``_config.yml``::

    sphinx:
      config:
        website_only_pages: [appendix/measured]

and this handler removes the launch-button menu from them, after the theme has added it. The page
says at its top that it is website-only.
"""

from __future__ import annotations

from typing import Any

LAUNCH_BUTTONS_LABEL = "launch-buttons"
"""The ``label`` sphinx-book-theme gives its launch-button menu in ``header_buttons``."""


def remove_launch_buttons(app: Any, pagename: str, templatename: str, context: dict, doctree: Any):
    """Drop the launch-button menu from the header of the pages in ``website_only_pages``."""
    if pagename not in app.config.website_only_pages:
        return
    buttons = context.get("header_buttons")
    if buttons:
        context["header_buttons"] = [
            button for button in buttons if button.get("label") != LAUNCH_BUTTONS_LABEL
        ]


def setup(app: Any) -> dict[str, Any]:
    """Register ``website_only_pages`` and the handler, after the theme's (priority 501)."""
    app.add_config_value("website_only_pages", [], "html", types=[list])
    app.connect("html-page-context", remove_launch_buttons, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Move the book to another repository address: rewrite the URL everywhere it is written.

The address is configured once, as ``repository.url`` in ``_config.yml``; the launch buttons
(Colab, Binder), the repository and issue buttons of the website are made from it there. A few
places must spell it out too, because they are read without the website: the README and the intro
(the install commands), ``pyproject.toml`` (the project's links on the package index) and the
Colab cell at the top of every chapter (``%pip install "lrtools-keras[book] @ git+URL"``).
This script replaces the configured URL by a new one in all of them, and the folder name in the
intro's ``git clone ...; cd NAME``. ``tests/test_packaging.py`` checks that they agree.

Usage, from anywhere::

    python scripts/set_repository_url.py https://github.com/OWNER/NAME          # rewrite
    python scripts/set_repository_url.py https://github.com/OWNER/NAME --dry-run  # only list

The new URL must be a GitHub repository (``https://github.com/OWNER/NAME``): Colab opens
notebooks from GitHub only. Then commit, and set the repository's Pages source to
"GitHub Actions" (Settings, Pages) so that ``.github/workflows/book.yml`` can publish the website.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GITHUB_URL = re.compile(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
CONFIG_URL = re.compile(r"^(\s*url:\s*)(\S+)\s*$", re.MULTILINE)
TEXT_FILES = ("_config.yml", "README.md", "intro.md", "pyproject.toml")


def configured_url(root: Path = ROOT) -> str:
    """Return ``repository.url`` from ``root/_config.yml``."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return str(config["repository"]["url"])


def files_with_the_url(root: Path = ROOT) -> list[Path]:
    """Return every file that spells out the repository's URL: config, docs, notebooks."""
    return [root / name for name in TEXT_FILES] + sorted((root / "chapters").glob("*.ipynb"))


def check_url(url: str) -> str:
    """Return ``url`` without a trailing slash or ``.git``; raise ValueError if not GitHub's."""
    url = url.strip().removesuffix("/").removesuffix(".git")
    if GITHUB_URL.fullmatch(url) is None:
        raise ValueError(f"url must look like https://github.com/OWNER/NAME, got {url!r}")
    return url


def set_repository_url(new_url: str, root: Path = ROOT, *, dry_run: bool = False) -> list[Path]:
    """Replace the configured repository URL by ``new_url`` in every file that spells it out.

    Args:
        new_url: the new address, ``https://github.com/OWNER/NAME``.
        root: the repository's root folder.
        dry_run: only return the files that would change.

    Returns:
        The files changed (or that would be).

    Raises:
        ValueError: if ``new_url`` is not a GitHub repository URL.
    """
    new_url = check_url(new_url)
    old_url = configured_url(root)
    old_name, new_name = old_url.rsplit("/", 1)[1], new_url.rsplit("/", 1)[1]
    changed = []
    for path in files_with_the_url(root):
        text = path.read_text(encoding="utf-8")
        if path.name == "_config.yml":
            # Only repository.url: the other url keys (colab_url, binderhub_url) stay.
            new_text = CONFIG_URL.sub(
                lambda m: m.group(1) + (new_url if m.group(2) == old_url else m.group(2)), text
            )
        else:
            new_text = text.replace(old_url, new_url)
        if path.name == "intro.md":
            new_text = re.sub(
                rf"^cd {re.escape(old_name)}\b", f"cd {new_name}", new_text, flags=re.M
            )
        if new_text != text:
            changed.append(path)
            if not dry_run:
                path.write_text(new_text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command line: ``set_repository_url.py NEW_URL [--dry-run]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the new address, https://github.com/OWNER/NAME")
    parser.add_argument("--dry-run", action="store_true", help="list the files, change nothing")
    args = parser.parse_args(argv)
    try:
        changed = set_repository_url(args.url, dry_run=args.dry_run)
    except ValueError as error:
        parser.error(str(error))
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {len(changed)} files:")
    for path in changed:
        print(f"  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

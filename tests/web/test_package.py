"""The web page's templates and static files are package data: the wheel and the .deb ship them."""

from __future__ import annotations

import fnmatch
import tomllib

from tests.project.helpers import ROOT

WEB = ROOT / "edged" / "web"


def test_every_template_and_static_file_is_package_data() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = meta["tool"]["setuptools"]["package-data"]["edged.web"]
    files = [
        str(p.relative_to(WEB))
        for folder in ("templates", "static")
        for p in (WEB / folder).iterdir()
        if p.is_file()
    ]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not shipped (pyproject.toml package-data): {missing}"


def test_the_pages_name_only_files_that_exist() -> None:
    import re

    from edged.web import pages

    for name in pages.STATIC:
        assert (WEB / "static" / name).is_file()
    for template in (WEB / "templates").glob("*.html"):
        for used in re.findall(r'{% (?:extends|include) "([^"]+)"', template.read_text()):
            assert (WEB / "templates" / used).is_file(), (template.name, used)

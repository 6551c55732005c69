"""Artifact path rules (domain/artifacts.py): what the agent sends and the coordinator writes
must stay inside the artifact directory."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyfabric.domain.artifacts import MAX_PATH_CHARS, check_path


@pytest.mark.parametrize("path", ["a.txt", "sub/deep/b.bin", "x y/ü.txt", ".hidden", "a..b", "..a/b"])
def test_relative_paths_inside_the_directory_pass_unchanged(path: str):
    assert check_path(path) == path


@pytest.mark.parametrize(("path", "why"), [
    ("", "non-empty"), ("/etc/passwd", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"), ("a/./b", "'.'"),
    ("a//b", "empty"), ("a/", "empty"), ("a\\..\\b", "backslash"), ("a\nb", "control"), ("x" * (MAX_PATH_CHARS + 1),
                                                                                          "at most"),
    ("bad\udcff", "UTF-8"), (None, "non-empty"),
])
def test_escaping_or_malformed_paths_are_refused_naming_why(path: object, why: str):
    with pytest.raises(ValueError, match=why):
        check_path(path)


_segment = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)


@given(st.lists(st.one_of(_segment, st.sampled_from(["..", ".", ""])), min_size=1, max_size=8))
def test_whatever_passes_stays_inside_the_directory(parts: list[str]):
    path = "/".join(parts)
    try:
        checked = check_path(path)
    except ValueError:
        return
    joined = posixpath.normpath(posixpath.join("/root/artifacts", checked))
    assert joined.startswith("/root/artifacts/")
    assert checked == path and ".." not in checked.split("/")

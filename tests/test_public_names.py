from __future__ import annotations

import types

import emotorch


def test_public_names_exist_and_are_listed():
    assert sorted(emotorch.__all__) == sorted(set(emotorch.__all__))
    for name in emotorch.__all__:
        assert hasattr(emotorch, name), name
    public = {
        n
        for n in dir(emotorch)
        if not n.startswith("_") and n != "annotations" and not isinstance(getattr(emotorch, n), types.ModuleType)
    }
    assert public <= set(emotorch.__all__)

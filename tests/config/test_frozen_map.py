import pickle

import pytest

from workflows.config.frozen_map import FrozenMap, frozen_methods


def test_frozen_map_is_a_read_only_hashable_mapping():
    m = FrozenMap({"b": 1, "a": FrozenMap({"x": 2})})
    assert m == {"b": 1, "a": {"x": 2}}
    assert m == FrozenMap([("a", FrozenMap({"x": 2})), ("b", 1)])
    assert hash(m) == hash(FrozenMap([("a", FrozenMap({"x": 2})), ("b", 1)]))
    assert list(m) == ["b", "a"] and len(m) == 2
    assert repr(FrozenMap({"a": 1})) == "FrozenMap({'a': 1})"
    assert pickle.loads(pickle.dumps(m)) == m
    with pytest.raises(TypeError):
        m["b"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(FrozenMap({"a": [1]}))  # like a dict, an unhashable value makes it unhashable
    source = {"a": 1}
    copied = FrozenMap(source)
    source["a"] = 2
    assert copied["a"] == 1


def test_frozen_methods_freezes_both_levels():
    methods = frozen_methods({"gradient": {"abs": True}, "smoothgrad": {}})
    assert isinstance(methods, FrozenMap)
    assert all(isinstance(params, FrozenMap) for params in methods.values())
    assert methods == {"gradient": {"abs": True}, "smoothgrad": {}}

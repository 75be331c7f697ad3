"""The bundle-config expression evaluator: what it computes, what it refuses, and that nothing runs."""

from __future__ import annotations

import pytest

from napari_medseg.errors import ModelError
from napari_medseg.models.bundle_config import Resolver
from napari_medseg.models.expressions import DEVICE

CONFIG = {
    "displayable_configs": {"highres": True, "sw_overlap": 0.25},
    "spatial_size": [96, 96, 64],
    "labels": {"background": 0, "liver": 1, "spleen": 2},
    "n": 3,
    "nested": {"a": {"b": [10, 20, {"c": 7}]}},
    "expr_ref": "$@n * 2",
    "cycle_a": "$@cycle_b + 1",
    "cycle_b": "$@cycle_a + 1",
}


def _value(expr):
    return Resolver(CONFIG, "inference.json").literal(expr, "key")


@pytest.mark.parametrize("expr, expected", [
    ("$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]", [1.5, 1.5, 1.5]),
    ("$[1.5] * 3 if not @displayable_configs::highres else [3.0] * 3", [3.0, 3.0, 3.0]),
    ("$len(@spatial_size)", 3),
    ("$len(@labels) + 1", 4),
    ("$@nested#a#b#2#c - 1", 6),
    ("$@nested#a#b[1] // 3", 6),
    ("$max(@spatial_size) / 2", 48.0),
    ("$min(16, int(@displayable_configs#sw_overlap * 100))", 16),
    ("$round(2.675, 2)", 2.67),
    ("$tuple(@spatial_size[:2])", [96, 96]),
    ("$list((1, 2)) + [3]", [1, 2, 3]),
    ("$@n > 2 and @n < 5", True),
    ("$@n == 2 or 'x'", "x"),
    ("$1 < @n <= 3", True),
    ("$'liver' in @labels", True),
    ("$-@n ** 2", -9),
    ("${'a': @n, 'b': [@n, 2]}", {"a": 3, "b": [3, 2]}),
    ("$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'", "model.pt"),
    ("$@bundle_root + '/models/' + 'x.pt'", "./models/x.pt"),
    ("$@expr_ref + 1", 7),
    ("$float(@n) / 2", 1.5),
])
def test_allowed_expressions(expr, expected):
    assert _value(expr) == expected


@pytest.mark.parametrize("expr", [
    "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "$torch.device('cuda')",
])
def test_device_expressions_are_recognised(expr):
    assert Resolver(CONFIG, "x").shallow(expr, "device") is DEVICE
    res = Resolver({"net": {"a": 1, "device": expr}}, "x")
    assert res.literal(res.raw("net", "t"), "net") == {"a": 1}
    assert any("chooses a device" in n for n in res.notes)


@pytest.mark.parametrize("expr, needle", [
    ("$__import__('os').system('echo pwned')", "calls a computed function"),
    ("$open('/etc/passwd').read()", "calls a computed function"),
    ("$eval('1+1')", r"calls eval\(\)"),
    ("$(lambda: 1)()", "calls a computed function"),
    ("$lambda x: x", "Lambda"),
    ("$[i for i in range(3)]", "ListComp"),
    ("$os.getcwd()", r"calls os.getcwd\(\)"),
    ("$@n.__class__", "Attribute"),
    ("$scripts.monai_utils.get()", "scripts/"),
    ("$numpy.float32", "Attribute"),
    ("$import os", "not a valid expression"),
    ("$[0] * 10**9", "power|more than"),
    ("$'x' * 10**6", "more than"),
    ("$2 ** 1000", "power above 64"),
    ("$len(x=1)", "keyword"),
    ("$undefined_name + 1", "uses the name 'undefined_name'"),
    ("$@missing + 1", "not in the config"),
    ("$@cycle_a", "cycle"),
    ("$1 / 0", "ZeroDivisionError"),
    ("$@labels['kidney']", "cannot be indexed"),
    ("$f'{@n}'", "JoinedStr"),
    ("$(x := 3)", "NamedExpr"),
])
def test_refused_expressions_name_the_key_and_the_expression(expr, needle):
    with pytest.raises(ModelError, match=needle) as e:
        _value(expr)
    assert "key" in str(e.value) or "cycle" in str(e.value) or "not in the config" in str(e.value)


def test_nothing_is_executed(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError):
        _value(f"$__import__('pathlib').Path({str(marker)!r}).touch()")
    assert not marker.exists()

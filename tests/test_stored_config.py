"""``shiftprobe.stored_config``: a setting stored in a file may only choose among the project's models,
with plain values; ``torch.load`` in the package reads weights only, except the one opted-in path."""

import ast
import re

import pytest
import yaml
from conftest import CONF_DIR, ROOT

import shiftprobe.models as models
from shiftprobe.errors import ShiftProbeError
from shiftprobe.stored_config import LEGACY_TARGETS, check_plain, checked_model_config, model_targets

WHERE = "ckpt_path='x.ckpt'"


def test_every_model_option_and_legacy_name_is_allowed():
    """The allow-list keeps in step with conf/model/ and with the names old checkpoints used."""
    allowed = model_targets()
    targets = set()
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if target:  # options that only change the lab's keys inherit its target
            targets.add(target)
    assert targets and targets <= set(allowed)
    assert {allowed[t] for t in targets} <= {getattr(models, n) for n in models.__all__}
    cls, kwargs = checked_model_config({"_target_": "shiftprobe.model.LabCNN", "pool": "blur"}, WHERE)
    assert cls is models.LabCNN and kwargs == {"pool": "blur"}
    assert "shiftprobe.model.LabCNN" in LEGACY_TARGETS
    assert allowed["shiftprobe.models.lab.LabCNN"] is models.LabCNN  # its defining module's path too


@pytest.mark.parametrize(
    "model, named",
    [
        ({"_target_": "torch.load", "f": "x.pt"}, "model._target_='torch.load'"),
        ({"_target_": "subprocess.call", "args": "true"}, "model._target_='subprocess.call'"),
        ({"pool": "max"}, "model._target_=None"),
        ({"_target_": "shiftprobe.models.LabCNN", "pool": {"_target_": "os.getcwd"}}, "model.pool._target_"),
        ({"_target_": "shiftprobe.models.LabCNN", "_args_": [1]}, "model._args_"),
        ({"_target_": "shiftprobe.models.LabCNN", "_partial_": True}, "model._partial_"),
        ({"_target_": "shiftprobe.models.LabCNN", "pool": "${oc.decode:'{_target_: os.getcwd}'}"}, "model.pool"),
        ({"_target_": "shiftprobe.models.LabCNN", "pool": [1, {"_recursive_": False}]}, "model.pool[1]._recursive_"),
        ({"_target_": "shiftprobe.models.LabCNN", "pool": b"bytes"}, "a bytes"),
    ],
    ids=["torch_load", "subprocess", "no_target", "nested_target", "args", "partial", "interpolation",
         "nested_in_list", "bytes"],
)
def test_a_stored_model_setting_that_asks_for_code_is_refused_in_one_line(model, named):
    with pytest.raises(ShiftProbeError) as info:
        checked_model_config(model, WHERE)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{WHERE} records ") and named in message
    assert "nothing is built" in message


def test_plain_values_pass_and_others_name_their_key():
    check_plain(WHERE, "transform", {"rotation": {"angles": [15, -15.5], "mode": "bilinear"}, "flip": {}})
    check_plain(WHERE, "seed", None)
    for value, key in (({"a": {"_convert_": "all"}}, "x.a._convert_"), ({1: 2}, "x.1"), (object(), "x=")):
        with pytest.raises(ShiftProbeError, match=re.escape(key)):
            check_plain(WHERE, "x", value)


def _torch_load_calls(tree: ast.AST):
    """``(enclosing function, call)`` for every ``torch.load(...)`` call in ``tree``."""
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                yield func.name, node


def test_every_torch_load_in_the_package_reads_weights_only_but_the_opted_in_one():
    """Independent of the code: read the sources. The one ``weights_only=False`` is
    ``checkpoints._unpickle``, reached only with ``trusted=True``."""
    unsafe = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for name, call in _torch_load_calls(ast.parse(path.read_text())):
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                unsafe.append(f"{path.relative_to(ROOT)}:{name}")
    assert unsafe == ["src/shiftprobe/checkpoints.py:_unpickle"]
    source = (ROOT / "src/shiftprobe/checkpoints.py").read_text()
    callers = [m.start() for m in re.finditer(r"_unpickle\(", source)]
    assert len(callers) == 2  # its definition and the one call, after `if not trusted: raise`
    assert source.rindex("if not trusted:", 0, callers[1]) > source.rindex("def load_torch_file", 0, callers[1])

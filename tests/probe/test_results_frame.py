"""``Results.to_dataframe``: one row per network x family x layer x transform x metric, values as in
results.json."""

import torch

import shiftprobe


def _net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 10, 4))
    return net


def test_frame_rows_hold_every_family_and_network():
    images = torch.rand(6, 12, 12)
    families = [shiftprobe.Translation(max_shift=1), shiftprobe.Rotation90(),
                shiftprobe.SubpixelTranslation(max_offset=0.5, step=0.5)]
    res = shiftprobe.measure(_net(), images, layers=["0", "3"], transform=families, untrained=_net())
    frame = res.to_dataframe()
    assert set(frame["family"]) == {"translation", "rot90", "subpixel"}
    assert set(frame["network"]) == {"trained", "untrained"}
    rot = frame[(frame.family == "rot90") & (frame.group == "param") & (frame.network == "trained")]
    assert sorted(set(rot["param"])) == [1, 2, 3]
    sub = frame[(frame.family == "subpixel") & (frame.group == "param")]
    assert set(sub["param"]) == {"x:0.5", "y:0.5"}
    entry = res.families["rot90"]["entries"][1]  # k = 2
    row = rot[(rot.param == 2) & (rot.layer == "3") & (rot.metric == "invariance_score")]
    assert len(row) == 1 and row["value"].item() == entry["3"]["invariance_score"]
    # translation rows come from the top level only, once
    shifts = frame[(frame.family == "translation") & (frame.group == "shift") & (frame.network == "trained")]
    n_metrics = sum(len(res["shifts"][0][layer]) for layer in res["layers"])
    assert len(shifts) == len(res["shifts"]) * n_metrics


def test_a_translation_only_frame_keeps_its_columns():
    res = shiftprobe.measure(_net(), torch.rand(4, 12, 12), layers=["3"], transform=shiftprobe.Translation(max_shift=1))
    frame = res.to_dataframe()
    assert list(frame.columns) == ["network", "family", "group", "layer", "dy", "dx", "radius", "param", "metric", "value"]
    assert set(frame["group"]) == {"shift", "summary"} and frame["param"].isna().all()

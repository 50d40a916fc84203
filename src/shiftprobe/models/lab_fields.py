"""Hand-derived receptive fields of the lab CNN (``shiftprobe.model.LabCNN``, ``pool="max"``,
``padding="valid"``); to join the LabCNN's own module when it moves into this package.

Receptive field of map position i (one axis, unbounded input), as (stride r, a, b): the inclusive
pixel interval [r*i + a, r*i + b]. A layer with kernel k, stride s, padding p on a map with (r, a, b)
gives (r*s, a - r*p, b + r*(k - 1 - p)); ReLU is pointwise.
  conv1  k5 s1 on pixels:    [i, i+4]                 -> (1, 0, 4)
  pool1  k2 s2 on conv1:     [2i, (2i+1)+4]           -> (2, 0, 5)
  conv2  k5 s1 on pool1:     [2i, 2(i+4)+5]           -> (2, 0, 13)
  pool2  k2 s2 on conv2:     [2*2i, 2(2i+1)+13]       -> (4, 0, 15)
(The blur variant's reflect padding and the circular variant's wrap-around make the fields depend
on the map border; they are not listed.)
"""

RECEPTIVE_FIELDS: dict[str, tuple[int, int, int]] = {
    "conv1": (1, 0, 4),
    "pool1": (2, 0, 5),
    "conv2": (2, 0, 13),
    "pool2": (4, 0, 15),
}

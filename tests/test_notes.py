"""Notes: the numpy hand-off between stages."""

import numpy as np

from musicgen.notes import Notes


def test_window_keeps_onsets_inside_shifts_them_and_cuts_offsets():
    notes = Notes.from_arrays([60, 62, 64, 65], [80, 81, 82, 83],
                              [0.5, 1.0 - 1e-12, 2.0, 3.0], [1.5, 2.5, 3.5, 4.0])
    window = notes.window(1.0, 3.0)
    assert window.pitch.tolist() == [62, 64]  # 60 starts before, 65 at the end (excluded)
    np.testing.assert_allclose(window.start, [0.0, 1.0])
    np.testing.assert_allclose(window.end, [1.5, 2.0])  # 64 cut at the window's end
    open_ended = notes.window(2.0)
    assert open_ended.pitch.tolist() == [64, 65]
    np.testing.assert_allclose(open_ended.end, [1.5, 2.0])

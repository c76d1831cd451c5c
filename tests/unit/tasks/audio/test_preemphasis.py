import numpy as np
import pytest

from tasks.audio.preemphasis import PreEmphasisError, pre_emphasis


def test_matches_hand_computed_values():
    x = np.array([1.0, 2.0, 0.0, -1.0, 0.5], dtype=np.float32)
    # y[0] = x[0]; y[n] = x[n] - 0.97 x[n-1]
    expected = np.array([1.0, 2.0 - 0.97, 0.0 - 1.94, -1.0 - 0.0, 0.5 + 0.97], dtype=np.float32)
    y = pre_emphasis(x, 0.97)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_array_equal(x, [1.0, 2.0, 0.0, -1.0, 0.5])  # input untouched


def test_zero_coefficient_is_identity_and_one_is_first_difference():
    x = np.arange(6, dtype=np.float64) ** 2
    np.testing.assert_array_equal(pre_emphasis(x, 0.0), x)
    np.testing.assert_array_equal(pre_emphasis(x, 1.0), [0, 1, 3, 5, 7, 9])


def test_constant_signal_is_attenuated_to_three_percent():
    y = pre_emphasis(np.full(100, 0.5, dtype=np.float32), 0.97)
    np.testing.assert_allclose(y[1:], 0.015, rtol=1e-5)


def test_empty_and_single_sample_signals():
    assert pre_emphasis(np.zeros(0, dtype=np.float32), 0.97).shape == (0,)
    np.testing.assert_array_equal(pre_emphasis(np.array([0.25], dtype=np.float32), 0.97), [0.25])


@pytest.mark.parametrize(
    ("x", "coefficient", "message"),
    [
        (np.zeros((2, 10), dtype=np.float32), 0.97, "1-D"),
        (np.zeros(10, dtype=np.int16), 0.97, "float"),
        (np.zeros(10, dtype=np.float32), 1.5, "outside"),
    ],
)
def test_rejects_bad_input_with_a_clear_message(x, coefficient, message):
    with pytest.raises(PreEmphasisError, match=message):
        pre_emphasis(x, coefficient)

"""Step schedules agree with Captum's approximation methods (the names users know)."""
import numpy as np
import pytest
from captum.attr._utils.approximation_methods import approximation_parameters

from onnx_gig.errors import InputError
from onnx_gig.quadrature import RULES, schedule


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [2, 3, 7, 50, 64])
def test_same_alphas_and_weights_as_captum(rule, n):
    step_sizes, alphas = approximation_parameters(rule)
    a, w = schedule(n, rule)
    # Captum's Riemann alphas come from float32 torch.linspace: equal to the float32 ulp
    np.testing.assert_allclose(a, np.asarray(alphas(n), np.float32), rtol=2.5e-7, atol=6e-8)
    np.testing.assert_allclose(w, np.asarray(step_sizes(n), np.float32), rtol=1e-7, atol=0)


def test_one_step_right_is_the_input_itself():
    a, w = schedule(1, "riemann_right")
    assert a.tolist() == [1.0] and w.tolist() == [1.0]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_step_counts_are_refused(bad):
    with pytest.raises(InputError, match="steps"):
        schedule(bad, "gausslegendre")


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(InputError, match="riemann_left.*gausslegendre"):
        schedule(10, "simpson")

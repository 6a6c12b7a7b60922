"""Method-name shorthands and their solver objects: every option of every shorthand either works
as a keyword of `sample` or raises the library's error naming the object to pass; `"unipc"` is a
shorthand; `Inpainting` checks `observed` where it is known and ignores it elsewhere."""

import inspect

import pytest
import torch

import sdescore
from sdescore.solvers import ODE_METHODS, SDE_METHODS, Inpainting, sample_ode, sample_sde

from problems import gaussian_1d, make_sdes

VP = make_sdes()["vp"]
DATA = gaussian_1d()
RS = VP.reverse(DATA.score_fn(VP))
PF = VP.probability_flow(DATA.score_fn(VP))


def _options(cls):
    """The keyword options of a solver class and their defaults."""
    return {
        n: p.default
        for n, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _cases():
    for process, names, build in (
        (RS, SDE_METHODS, sample_sde._build),
        (PF, ODE_METHODS, sample_ode._build),
    ):
        for name in names:
            solver = build(name, {})
            steps = {} if solver.default_steps is None else {"steps": 2}
            for opt, default in _options(type(solver)).items():
                yield pytest.param(
                    process, name, type(solver), steps, opt, default, id=f"{name}-{opt}"
                )


@pytest.mark.parametrize(("process", "name", "cls", "steps", "opt", "default"), list(_cases()))
def test_every_solver_option_works_as_keyword_or_names_the_object(
    process, name, cls, steps, opt, default
):
    # The default value passed explicitly: accepted (same samples as without it), or refused
    # with the library's error naming the method and how to pass the option; never Python's
    # bare "unexpected keyword argument" (which sde_dpm_solver's `order` gave).
    try:
        out = process.sample((3, 1), method=name, generator=torch.Generator().manual_seed(0),
                             **steps, **{opt: default})  # fmt: skip
    except (TypeError, ValueError) as err:
        msg = str(err)
        assert repr(name) in msg, msg
        if "do not apply" not in msg:
            assert f"method=sdescore.{cls.__name__}(" in msg and repr(opt) in msg, msg
    else:
        ref = process.sample(
            (3, 1), method=name, generator=torch.Generator().manual_seed(0), **steps
        )
        assert torch.equal(out, ref)


def test_sde_dpm_solver_order_names_the_object_and_its_options():
    with pytest.raises(TypeError) as info:
        RS.sample((4, 1), method="sde_dpm_solver", order=3, steps=5)
    msg = str(info.value)
    assert "method=sdescore.SDEDPMSolver(order=3)" in msg
    assert "['damped', 'eta', 'order', 'schedule']" in msg
    # what the message says to do works, and is what it says
    a = RS.sample((4, 1), method=sdescore.SDEDPMSolver(order=3), steps=5, return_info=True)
    assert a.samples.shape == (4, 1) and a.nfe == 5


def test_dpm_solver_options_that_sample_lacks_name_the_object():
    with pytest.raises(TypeError, match=r"method=sdescore.DPMSolver\(damped=True\)"):
        PF.sample((4, 1), method="dpm_solver", multistep=True, damped=True)
    with pytest.raises(TypeError, match=r"method=sdescore.UniPC\(variant='bh1'\)"):
        PF.encode(torch.zeros(4, 1), method="unipc", variant="bh1")
    with pytest.raises(TypeError, match=r"method=sdescore.PC\(corrector=Langevin"):
        RS.sample((4, 1), method="pc", corrector=sdescore.Langevin(snr=0.1))
    # a solver object with an option set on sample: set it on the object
    with pytest.raises(ValueError, match=r"\['order'\] are set on the solver object"):
        RS.sample((4, 1), method=sdescore.SDEDPMSolver(), order=3)


def test_a_misspelt_keyword_is_named_with_a_suggestion():
    with pytest.raises(TypeError, match=r"argument\(s\) \['stpes'\].*did you mean 'steps'\?$"):
        RS.sample((4, 1), method="euler_maruyama", stpes=10)
    with pytest.raises(TypeError, match=r"\['genrator'\].*did you mean 'generator'\?$"):
        PF.sample((4, 1), genrator=torch.Generator())
    # the PF ODE has no inpaint=: the error says where it is
    with pytest.raises(TypeError, match=r"inpaint.*reverse SDE"):
        PF.sample((4, 1), inpaint=Inpainting(torch.zeros(1, 2), torch.tensor([True, False])))


@pytest.mark.parametrize(
    ("legacy", "obj"),
    [
        ({}, sdescore.UniPC()),
        ({"order": 3, "schedule": "logsnr"}, sdescore.UniPC(order=3, schedule="logsnr")),
    ],
)
def test_unipc_shorthand_is_the_default_object_bit_for_bit(legacy, obj):
    for steps in ({}, {"steps": 7}):
        a = PF.sample((16, 1), method="unipc", generator=torch.Generator().manual_seed(2),
                      return_info=True, **legacy, **steps)  # fmt: skip
        b = PF.sample((16, 1), method=obj, generator=torch.Generator().manual_seed(2),
                      return_info=True, **steps)  # fmt: skip
        assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe == steps.get("steps", 20)
    z = torch.randn(16, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(PF.encode(z, method="unipc", **legacy), PF.encode(z, method=obj))
    assert "unipc" in ODE_METHODS
    with pytest.raises(ValueError, match="'unipc' is a probability-flow ODE method"):
        RS.sample((4, 1), method="unipc")
    with pytest.raises(ValueError, match=r"\['prediction'\] do not apply to method 'unipc'"):
        PF.sample((4, 1), method="unipc", prediction="data")


def test_inpainting_refuses_nan_or_inf_observed_where_known():
    mask = torch.tensor([[True, False, True], [True, True, False]])
    obs = torch.tensor([[float("nan"), 0.0, 1.0], [float("inf"), 2.0, 0.0]])
    with pytest.raises(ValueError, match=r"observed is NaN or Inf at 2 of its 4 known entries"):
        Inpainting(obs, mask)
    # a shared (*D) observation against a per-example mask: counted per example
    with pytest.raises(ValueError, match=r"observed is NaN or Inf at 2 of its 4 known entries"):
        Inpainting(torch.tensor([float("nan"), 0.0, 1.0]), mask)


@pytest.mark.parametrize("method", ["replace", "tweedie"])
def test_nan_observed_where_unknown_is_ignored(method):
    # By definition the unknown entries of `observed` are never read: NaN there gives the
    # very same samples as zeros (same seed), finite, with the known part equal to observed.
    sde = sdescore.VPSDE()
    cov = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    data = sdescore.toy.gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64), covariance=cov)
    rs = sde.reverse(data.score_fn(sde))
    mask = torch.tensor([True, False])
    out = [
        rs.sample(
            (64, 2),
            method=m,
            steps=10,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(1),
            inpaint=Inpainting(torch.tensor([1.5, fill], dtype=torch.float64), mask, method=method),
        )  # fmt: skip
        for fill in (float("nan"), 0.0)
        for m in ("reverse_diffusion", "pc")
    ]
    for a, b in zip(out[:2], out[2:], strict=True):
        assert torch.equal(a, b) and bool(a.isfinite().all()) and bool((a[:, 0] == 1.5).all())


def test_exactly_the_documented_methods_take_inpaint():
    # docs/guidance.md names these five; every other reverse-SDE method refuses inpaint=.
    inpaint = Inpainting(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    rs, taking = VP.reverse(lambda x, t: -x), []  # the score of N(0, I) under the VP SDE
    for name in SDE_METHODS:
        try:
            steps = {} if name == "gotta_go_fast" else {"steps": 2}
            rs.sample((2, 2), method=name, inpaint=inpaint, **steps)
        except ValueError as err:
            assert f"['inpaint'] do not apply to method {name!r}" in str(err), err
        else:
            taking.append(name)
    assert taking == ["euler_maruyama", "reverse_diffusion", "ancestral", "pc", "annealed_langevin"]

"""The one solver model: every method name is a shorthand for a default-configured solver object
(bit for bit); a solver option given to `sample` raises a `TypeError` naming the object and option
to use; a name of the other process says where it belongs; `Inpainting` wraps a native sampler and
checks `observed` where it is known and ignores it elsewhere."""

import inspect

import pytest
import torch

import sdescore
from sdescore.solvers import METHODS, ODE_METHODS, SDE_METHODS, Inpainting

from problems import gaussian_1d, make_sdes

VP = make_sdes()["vp"]
DATA = gaussian_1d()
RS = VP.reverse(DATA.score_fn(VP))
PF = VP.probability_flow(DATA.score_fn(VP))
PROCESS = {"sde": RS, "ode": PF}


def _options(cls):
    """The keyword options of a solver class and their defaults."""
    return {
        n: p.default
        for n, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _cases():
    for process, table in METHODS.items():
        shared = inspect.signature(PROCESS[process].sample).parameters  # `steps`: both
        for name, build in table.items():
            cls = type(build())
            for opt, default in _options(cls).items():
                if opt not in shared:
                    yield pytest.param(process, name, cls, opt, default, id=f"{name}-{opt}")


@pytest.mark.parametrize(("process", "name", "cls", "opt", "default"), list(_cases()))
def test_every_solver_option_given_to_sample_names_the_object(process, name, cls, opt, default):
    # What a solver needs lives on the object only: sample() refuses the option with a TypeError
    # that says how to set it (never Python's bare "unexpected keyword argument").
    with pytest.raises(TypeError) as info:
        PROCESS[process].sample((3, 1), method=name, **{opt: default})
    msg = str(info.value)
    assert f"method=sdescore.{cls.__name__}(" in msg and f"{opt}=" in msg, msg


@pytest.mark.parametrize(("process", "name"), [(p, n) for p, t in METHODS.items() for n in t])
def test_every_shorthand_is_its_default_object_bit_for_bit(process, name):
    proc = PROCESS[process]
    solver = METHODS[process][name]()
    steps = {} if solver.default_steps is None else {"steps": 3}
    kw = dict(return_info=True, dtype=torch.float64)
    a = proc.sample((5, 1), method=name, generator=torch.Generator().manual_seed(0), **steps, **kw)
    b = proc.sample(
        (5, 1), method=solver, generator=torch.Generator().manual_seed(0), **steps, **kw
    )
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe and a.solver == b.solver


def test_a_name_of_the_other_process_says_where_it_belongs():
    for proc, name, where in ((PF, "pc", "sde.reverse"), (RS, "unipc", "sde.probability_flow")):
        with pytest.raises(ValueError, match=rf"'{name}' is a method of .*{where}"):
            proc.sample((4, 1), method=name)
    with pytest.raises(ValueError, match=r"integrates the reverse SDE.*sde.reverse"):
        PF.sample((4, 1), method=sdescore.PC())
    with pytest.raises(ValueError, match=r"method must be one of .*did you mean 'unipc'"):
        PF.sample((4, 1), method="unipcc")
    with pytest.raises(TypeError, match="method must be a method name or an sdescore.Solver"):
        PF.sample((4, 1), method=3)


def test_old_keywords_name_the_object_and_option():
    with pytest.raises(TypeError, match=r"method=sdescore.SDEDPMSolver\(order=3\)"):
        RS.sample((4, 1), method="sde_dpm_solver", order=3, steps=5)
    # what the message says to do works
    a = RS.sample((4, 1), method=sdescore.SDEDPMSolver(order=3), steps=5, return_info=True)
    assert a.samples.shape == (4, 1) and a.nfe == 5
    with pytest.raises(TypeError, match=r"method=sdescore.DPMSolver\(damped=True\)"):
        PF.sample((4, 1), method="dpm_solver", damped=True)
    with pytest.raises(TypeError, match=r"method=sdescore.UniPC\(variant='bh1'\)"):
        PF.encode(torch.zeros(4, 1), method="unipc", variant="bh1")
    with pytest.raises(TypeError, match=r"method=sdescore.PC\(corrector=sdescore.Langevin\(snr"):
        RS.sample((4, 1), method="pc", snr=0.1)
    with pytest.raises(TypeError, match=r"method=sdescore.TorchDiffEq\('dopri5', rtol=0.001\)"):
        PF.decode(torch.zeros(4, 1), rtol=1e-3)
    with pytest.raises(
        TypeError, match=r"schedule= is now the solver's grid: .*DPMSolver\(grid='logsnr'\)"
    ):
        PF.sample((4, 1), method="dpm_solver", schedule="logsnr")
    with pytest.raises(TypeError, match=r"method=sdescore.Inpainting\(observed, mask"):
        RS.sample((4, 1), inpaint=None)
    # an option of another solver: named with its owner
    with pytest.raises(TypeError, match=r"order= is not an option .*sdescore.SDEDPMSolver"):
        RS.sample((4, 1), method="euler_maruyama", order=2)


def test_a_misspelt_keyword_is_named_with_a_suggestion():
    with pytest.raises(TypeError, match=r"'stpes'; did you mean 'steps'\?"):
        RS.sample((4, 1), method="euler_maruyama", stpes=10)
    with pytest.raises(TypeError, match=r"'genrator'; did you mean 'generator'\?"):
        PF.sample((4, 1), genrator=torch.Generator())


def test_steps_apply_to_fixed_step_solvers_only():
    with pytest.raises(ValueError, match="steps does not apply to method .*chooses its own"):
        PF.sample((4, 1), method="dopri5", steps=10)


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
            method=Inpainting(
                torch.tensor([1.5, fill], dtype=torch.float64), mask, method=method, solver=m
            ),
            steps=10,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(1),
        )
        for fill in (float("nan"), 0.0)
        for m in ("reverse_diffusion", "pc")
    ]
    for a, b in zip(out[:2], out[2:], strict=True):
        assert torch.equal(a, b) and bool(a.isfinite().all()) and bool((a[:, 0] == 1.5).all())


def test_exactly_the_documented_methods_take_inpainting():
    # docs/guidance.md names these five; every other reverse-SDE method refuses to be wrapped.
    obs, mask = torch.tensor([1.0, 0.0]), torch.tensor([True, False])
    rs, taking = VP.reverse(lambda x, t: -x), []  # the score of N(0, I) under the VP SDE
    for name in SDE_METHODS:
        try:
            inpaint = Inpainting(obs, mask, solver=name)
        except ValueError as err:
            assert "cannot inpaint" in str(err), err
        else:
            out = rs.sample((2, 2), method=inpaint, steps=2)
            assert bool((out[:, 0] == 1.0).all())
            taking.append(name)
    assert taking == ["euler_maruyama", "reverse_diffusion", "ancestral", "pc", "annealed_langevin"]
    with pytest.raises(ValueError, match="integrates the reverse SDE"):
        PF.sample((2, 2), method=Inpainting(obs, mask))
    assert "auto" in ODE_METHODS


def test_a_new_users_slips_get_a_pointer():
    """Found by a new-user review: each slip names what to write instead."""
    with pytest.raises(ValueError, match="did you mean 'unipc'"):
        PF.sample((4, 1), method="UniPC")  # the class name as a string
    with pytest.raises(ValueError, match="did you mean 'logsnr'"):
        sdescore.DPMSolver(grid="log_snr")
    # score_sde's n_steps are Langevin steps per predictor step, not `steps`
    with pytest.raises(TypeError, match=r"PC\(corrector=sdescore.Langevin\(steps=2\)\)"):
        RS.sample((4, 1), method="pc", n_steps=2)
    # a diffusers grid ends at sigma = 0; the error says to end it at eps
    with pytest.raises(ValueError, match=r"replace the grid's last time 0 by eps"):
        PF.sample((4, 1), method=sdescore.DPMSolver(order=1, grid=[1.0, 0.5, 0.0]))
    with pytest.raises(TypeError, match=r"sampler=sdescore.Auto\(steps=10\)"):
        sdescore.evaluate(DATA.score_fn(VP), torch.zeros(4, 1), sde=VP, steps=10)
    with pytest.raises(ValueError, match="solver must be one of"):
        sdescore.likelihood(DATA.score_fn(VP), torch.zeros(2, 1), sde=VP, solver="unipc")
    with pytest.raises(TypeError, match=r"dequantization=256"):
        sdescore.likelihood(DATA.score_fn(VP), torch.zeros(2, 1, dtype=torch.long), sde=VP)

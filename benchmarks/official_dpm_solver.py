"""Lu et al.'s official DPM-Solver file as a peer of `benchmarks/peers.py`.

    python benchmarks/peers.py --dpm-solver PATH/dpm_solver_pytorch.py [--all]

The file (github.com/LuChengTHU/dpm-solver, `dpm_solver_pytorch.py`; the figures in
docs/sampling.md come from commit 52bc3fb of 2023-12-06) is not on the package index, so it is
not a dependency: download it and give its path. It is loaded as a module and driven with the
workload's score: its continuous linear VP schedule with beta_0 = 0.1 and beta_1 = 20 is
`VPSDE(0.1, 20)`, and its noise-prediction model is eps = -sigma(t) score(x, t), wrapped by its
own `model_wrapper`. It runs from t = T to eps = 1e-3 with `steps` = NFE (singlestep and
multistep both spend exactly `steps` calls; `singlestep_fixed` is left out: it spends
`steps * order`). Configurations: DPM-Solver++ and DPM-Solver (`algorithm_type`), multistep of
orders 1-3 with and without `lower_order_final`, singlestep ("DPM-Solver-fast") of orders 2 and
3, each on its three grids (`skip_type` logSNR, time_uniform, time_quadratic).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

EPS = 1e-3
ALGORITHMS = ("dpmsolver++", "dpmsolver")
SKIP_TYPES = ("time_quadratic", "logSNR", "time_uniform")


def load(path: str):
    """The official file as a module (`ValueError` if it is not there)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--dpm-solver: no file at {path!r}")
    spec = importlib.util.spec_from_file_location("dpm_solver_official", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_names():
    for algorithm, skip in itertools.product(ALGORITHMS, SKIP_TYPES):
        for order in (1, 2, 3):
            for low_final in (True, False) if order > 1 else (True,):
                yield algorithm, "multistep", order, skip, low_final
        for order in (2, 3):
            yield algorithm, "singlestep", order, skip, True


def configs(official) -> dict:
    """{configuration name: solve(w, z, nfe, score=None)} for the peers' toy table."""
    schedule = official.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)

    def solver(algorithm, method, order, skip, low_final):
        def solve(w, z, nfe, score=None):
            score = w.score if score is None else score

            def eps_model(x, t):
                sigma = schedule.marginal_std(t).to(x.dtype)
                return -sigma.view(-1, *([1] * (x.dim() - 1))) * score(x, t.to(x.dtype))

            model = official.model_wrapper(eps_model, schedule, model_type="noise")
            dpm = official.DPM_Solver(model, schedule, algorithm_type=algorithm)
            return dpm.sample(
                z.clone(), steps=nfe, t_start=1.0, t_end=EPS, order=order, skip_type=skip,
                method=method, lower_order_final=low_final,
            )  # fmt: skip

        return solve

    return {
        f"{a} {m} {o}, {s}" + ("" if lf else ", no low final"): solver(a, m, o, s, lf)
        for a, m, o, s, lf in _config_names()
    }

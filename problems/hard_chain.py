"""Hard families for complexity exponents: the bilevel lift of the zero-chain lower bounds.

Inner and outer, with x, y in R^d:

    g(x, y) = 1/2 ||y - x||^2            (deterministic: y*(x) = x, H = I, J = d2g/dxdy = -I)
    f(x, y) = F(y),  grad_x f = 0,  grad_y f = a noisy oracle O(y; xi) with E O(y; xi) = grad F(y)

so Phi = F, grad Phi = grad F is exact (``grad_norm_sq`` is exact), and every hypergradient
estimator of the harness (Neumann with step eta': 1 - (1 - eta')^(Q+1); CG and SOBA's v: exact;
an ES Jacobian of N inner steps at step alpha: 1 - (1 - alpha)^N) is a positive scalar times
grad_y f: no method is handicapped by the inner problem. The design note is
../shared/COMPLEXITY.md; the suite that measures the exponents is ``bench/suites/complexity.toml``.

The chain (Carmon, Duchi, Hinder, Sidford, "Lower bounds for finding stationary points I",
Math. Program. 2020, eq. (9); Arjevani, Carmon, Duchi, Foster, Srebro, Woodworth, "Lower bounds
for non-convex stochastic optimization", Math. Program. 2023):

    F_T(u) = -Psi(1) Phi(u_1) + sum_{i=2..T} [Psi(-u_{i-1}) Phi(-u_i) - Psi(u_{i-1}) Phi(u_i)]
    Psi(t) = 0 for t <= 1/2, exp(1 - (2t - 1)^-2) for t > 1/2
    Phi(t) = sqrt(e) * integral_{-inf}^t exp(-s^2 / 2) ds

Properties used (tested numerically in tests/problems/test_hard_chain.py): grad F_T is
Lipschitz (the papers: 152) and ||grad F_T||_inf <= 23; F_T(0) - inf F_T <= 12 T; ||grad F_T(u)||
> 1 while |u_T| < 1; zero-chain: grad_i F_T(u) = 0 for i > prog_{1/2}(u) + 1, where prog_a(u) =
max{i : |u_i| > a} (0 if none), so a zero-respecting method reveals at most one coordinate per
oracle call that reveals anything.

Level eps (the target of ||grad Phi||^2, ``grad_norm_sq``): eps_k = eps0 10^(-k/4), k = ``level``.
With a gradient scale s = 2 sqrt(eps) (``s / c`` for H3, whose embedding halves the bound, c =
1/2), the level-eps function is F(y) = a F_T(y / lam) with a / lam = s, so ||grad F||^2 > 4 eps
until the chain is done (|u_T| >= 1). Families (``family``):

- ``h1``, bounded variance: lam = s (curvature a / lam^2 = 1, L = 152 at every level); chain
  length T_k = round(T0 eps0 / eps_k), reveal probability p_k = p0 eps_k / eps0. The oracle of
  Arjevani et al. (their eq. (11)): [O(y; xi)]_i = s grad_i F_T(u) (1 + 1{i > prog_{1/4}(u)}
  (xi / p - 1)), xi ~ Bernoulli(p), one xi per sample. Variance <= (23 s)^2 (1 - p) / p, which is
  the same at every level since p ~ eps ~ s^2. Every zero-respecting method needs about
  T / p ~ eps^-2 samples.
- ``h2``, mean-squared smooth (their Section 3.2 construction): the indicator is replaced by the
  Lipschitz Theta_i(u) = Gamma(1 - sqrt(sum_{k >= i} Gamma(|u_k|)^2)) Gamma(|u_{i-1}|) (u_0 = 1),
  Gamma a smooth step from 0 at 1/4 to 1 at 1/2, so that per-sample oracles at two nearby points
  are close (the property variance-reduced methods exploit). Curvature a / lam^2 = sqrt(eps /
  eps0) shrinks with eps, which keeps the mean-squared smoothness constant, about (curvature)^2 / p,
  fixed: lam = 2 sqrt(eps0) at every level, T_k = round(T0 sqrt(eps0 / eps_k)), p_k = p0 eps_k /
  eps0. Lower bound T / p ~ eps^-1.5, the rate MRBO, VRBO and SUSTAIN claim.
  Difference from the paper: Gamma is the C^2 smootherstep 6t^5 - 15t^4 + 10t^3 of (t - 1/4) * 4,
  not the paper's C^infinity integral of a bump; only its Lipschitz constant (7.5) matters for
  mean-squared smoothness.
- ``h3``, separation (Arjevani et al.'s randomized coercive embedding, as in Carmon et al.'s
  Section 5): d = embed T, F(y) = a [F_T(U^T rho(y / lam)) + ||y / lam||^2 / 10], U a random
  d x T matrix with orthonormal columns (instance seed), rho(z) = z / sqrt(1 + ||z||^2 / R^2),
  R = 230 sqrt(T); T_k and lam as h1 with c = 1/2 (||grad|| > 1/2 of the unit scale while
  |<u_T, rho(z)>| < 1/2). Oracle grad F(y) + sigma s0 zeta, zeta ~ N(0, I / d) per sample,
  s0 = 2 sqrt(eps0) the level-0 gradient scale: additive noise of constant variance. SGD-type
  methods need about eps^-2 samples (an upper bound); two-point differences of variance-reduced
  methods cancel additive noise. No matching lower bound: report what is measured.

``rotated=True`` (h1, h2) uses h3's randomized coercive embedding with the family's noise:
F(y) = a [F_T(U^T rho(z)) + ||z||^2 / 10], z = y / lam, the Bernoulli oracle applied to the chain
coordinates and lifted through rho (gradient scale s / c with c = 1/2, as h3). Methods that are
not zero-respecting (Gaussian-direction ES: ESJ-S, HOZOG) need it. A rotation alone is not
enough: F_T's gradient vanishes far out on every coordinate, so big random moves find points
with ||grad F||^2 <= eps without revealing the chain (a first complexity run, 2026-12-06, had
ESJ-S reach level 8 of a rotation-only h1 with under 1% of the T / p samples the lower bound
requires); the coercive term and rho close that exit (Carmon et al., Section 5).

Streaming samples: the outer samples are an unbounded stream (``streaming = True``, n_outer =
2^62): the harness's sampler hands out consecutive id blocks from a counter with a random
per-run offset (bench/oracles.py, StreamSampler), and the noise of sample id is a hash of
(instance_seed, id) (splitmix64). So one batch evaluated at two points sees the same noise
(MRBO, VRBO, SUSTAIN), and a batch's noise never depends on the run's other draws. A full batch
(idx None) does not exist: grad_f refuses it. Finite-sum methods (SAGA tables) skip these
problems (``info()["streaming"]``). The value oracle f is F itself, without noise: methods that
difference f values (HOZOG) are outside the oracle model of these families.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from problems.base import Index, Problem, check, is_int, is_real, register

FAMILIES = ("h1", "h2", "h3")
LEVELS = 9                          # eps_k = eps0 10^(-k/4), k = 0..8: two decades
STREAM = 2 ** 62                    # n_outer of a streaming problem (the id space)
SQRT_E = math.sqrt(math.e)
SQRT_PI_2 = math.sqrt(math.pi / 2)

# splitmix64 (Steele, Lea, Flood 2014) on int64 tensors: products wrap mod 2^64
_GOLDEN = -7046029254386353131      # 0x9E3779B97F4A7C15 as int64
_M1 = -4658895280553007687          # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685          # 0x94D049BB133111EB


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer: a bijective hash of int64 values."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def uniforms(key: int, ids: torch.Tensor) -> torch.Tensor:
    """U(0, 1) in float64, one per id, a pure function of (key, id)."""
    return (_shr(mix64(ids * _GOLDEN + key), 11).double() + 0.5) * 2.0 ** -53


def normals(key: int, ids: torch.Tensor, d: int) -> torch.Tensor:
    """(len(ids), d) standard normals (Box-Muller), a pure function of (key, id, column)."""
    cells = (ids.unsqueeze(1) * d + torch.arange(d)).reshape(-1) * 2
    u1, u2 = uniforms(key, cells), uniforms(key, cells + 1)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).reshape(len(ids), d)


def stream_ids(idx: Index) -> torch.Tensor:
    """The sample ids of a stream batch (a slice or LongTensor; never None)."""
    if idx is None:
        raise ValueError("a streaming problem has no full batch: give the solver a batch size")
    if isinstance(idx, slice):
        return torch.arange(idx.start, idx.stop, idx.step or 1)
    return torch.as_tensor(idx, dtype=torch.long).reshape(-1)


# ------------------------------------------------------------------------------ the chain
def psi(t):
    """Psi(t) and Psi'(t)."""
    w = (2 * t - 1).clamp(min=1e-3)                  # t <= 1/2 is masked below
    on = t > 0.5
    val = torch.where(on, torch.exp(1 - w ** -2), torch.zeros_like(t))
    return val, torch.where(on, val * 4 * w ** -3, torch.zeros_like(t))


def phi(t):
    """Phi(t) and Phi'(t)."""
    val = SQRT_E * SQRT_PI_2 * torch.special.erfc(-t / math.sqrt(2))
    return val, SQRT_E * torch.exp(-t * t / 2)


PHI_INF = math.sqrt(2 * math.pi * math.e)           # Phi(+inf): Phi(-t) = PHI_INF - Phi(t)


def chain(u: torch.Tensor, grad: bool = True):
    """F_T(u) and grad F_T(u) for u of shape (..., T).

    With u_0 = 1 (the first term is -Psi(1) Phi(u_1)), Psi(+-t) = Psi(|t|) 1{+-t > 0},
    Phi(-t) = Phi(inf) - Phi(t) and Phi' even:
      d/du_i of term i     = -Psi(|u_{i-1}|) Phi'(u_i)
      d/du_{i-1} of term i = -Psi'(|u_{i-1}|) (1{u_{i-1} < 0} Phi(-u_i) + 1{u_{i-1} > 0} Phi(u_i)).
    """
    one = torch.ones_like(u[..., :1])
    prev = torch.cat((one, u[..., :-1]), -1)
    p, dp = psi(prev.abs())
    pos = prev > 0
    f, df = phi(u)
    fm = PHI_INF - f
    value = torch.where(pos, -p * f, p * fm).sum(-1)
    if not grad:
        return value, None
    g = -p * df
    nxt = -dp * torch.where(pos, f, fm)
    return value, g + torch.cat((nxt[..., 1:], torch.zeros_like(one)), -1)


def prog(u: torch.Tensor, a: float) -> torch.Tensor:
    """prog_a(u) = max{i in 1..T : |u_i| > a}, 0 if none (u of shape (..., T))."""
    idx = torch.arange(1, u.shape[-1] + 1, device=u.device)
    return torch.where(u.abs() > a, idx, torch.zeros_like(idx)).amax(-1)


def smooth_step(t: torch.Tensor) -> torch.Tensor:
    """Gamma: 0 for t <= 1/4, 1 for t >= 1/2, the smootherstep in between (Lipschitz 7.5)."""
    s = ((t - 0.25) * 4).clamp(0, 1)
    return s * s * s * (s * (6 * s - 15) + 10)


def reveal_weight(u: torch.Tensor, family: str) -> torch.Tensor:
    """How much of each coordinate's gradient the Bernoulli noise multiplies: h1 the indicator
    1{i > prog_{1/4}(u)}, h2 the smoothed Theta_i(u)."""
    if family == "h1":
        idx = torch.arange(1, u.shape[-1] + 1, device=u.device)
        return (idx > prog(u, 0.25).unsqueeze(-1)).to(u.dtype)
    gam = smooth_step(u.abs())
    tail = gam.square().flip(-1).cumsum(-1).flip(-1)                     # sum_{k >= i} Gamma^2
    prev = torch.cat((torch.ones_like(u[..., :1]), gam[..., :-1]), -1)  # Gamma(|u_{i-1}|), u_0 = 1
    return smooth_step(1 - tail.sqrt()) * prev


@dataclass(frozen=True)
class HardChainParams:
    """One level of one family (module docstring)."""

    family: str = "h1"          # h1 (bounded variance), h2 (mean-squared smooth), h3 (separation)
    level: int = 0              # k: eps_k = eps0 10^(-k/4)
    eps0: float = 1e-2          # level 0's target of grad_norm_sq
    T0: int = 4                 # chain length at level 0
    p0: float = 0.5             # reveal probability at level 0 (h1, h2)
    sigma: float = 1.0          # h3: noise std in units of the level-0 gradient scale 2 sqrt(eps0)
    rotated: bool = False       # h1, h2: chain in a random subspace of R^(embed T) (h3: always)
    embed: int = 8              # d = embed T when rotated (and for h3)
    instance_seed: int = 0      # seed of U and of the noise hash

    def __post_init__(self):
        check(self, "family", self.family in FAMILIES, "one of " + ", ".join(FAMILIES))
        check(self, "level", is_int(self.level) and 0 <= self.level, "an int >= 0")
        check(self, "eps0", is_real(self.eps0) and self.eps0 > 0, "a finite number > 0")
        check(self, "T0", is_int(self.T0) and self.T0 >= 1, "an int >= 1")
        check(self, "p0", is_real(self.p0) and 0 < self.p0 <= 1, "a number in (0, 1]")
        check(self, "sigma", is_real(self.sigma) and self.sigma >= 0, "a finite number >= 0")
        check(self, "rotated", isinstance(self.rotated, bool), "true or false")
        check(self, "embed", is_int(self.embed) and self.embed >= 1, "an int >= 1")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")

    @property
    def ratio(self) -> float:
        """eps_k / eps0."""
        return 10.0 ** (-self.level / 4)

    @property
    def eps(self) -> float:
        return self.eps0 * self.ratio

    @property
    def T(self) -> int:
        grow = self.ratio ** -0.5 if self.family == "h2" else 1 / self.ratio
        return max(1, round(self.T0 * grow))

    @property
    def p(self) -> float:
        return 1.0 if self.family == "h3" else self.p0 * self.ratio


@register
class HardChain(Problem):
    """Zero-chain lower-bound families lifted to bilevel problems (module docstring)."""

    name = "hard-chain"
    Params = HardChainParams
    description = "H1/H2/H3 zero-chain hard families (bilevel lift, streaming noisy oracle), one level each"
    test_params: ClassVar[dict] = {"family": "h2", "T0": 3, "level": 1, "rotated": True, "embed": 2}
    streaming: ClassVar[bool] = True

    def __init__(self, params: HardChainParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        pr = params
        self.T, self.p, self.eps = pr.T, pr.p, pr.eps
        self.fam = pr.family
        rotated = pr.rotated or pr.family == "h3"                  # rotated = the coercive embedding
        scale = 2 * math.sqrt(pr.eps) / (0.5 if rotated else 1.0)   # s = a / lam
        self.lam = 2 * math.sqrt(pr.eps0) if pr.family == "h2" else scale
        self.a = scale * self.lam
        self.noise = pr.sigma * 2 * math.sqrt(pr.eps0)
        self.key = int(mix64(torch.tensor([pr.instance_seed * 1_000_003 + 17]))[0])
        d = pr.embed * self.T if rotated else self.T
        to = {"device": self.device, "dtype": self.dtype}
        self.u = None
        if rotated:
            gen = torch.Generator().manual_seed(pr.instance_seed)
            self.u = torch.linalg.qr(torch.randn(d, self.T, generator=gen, dtype=torch.float64))[0].to(**to)
        self.radius = 230 * math.sqrt(self.T)
        self.dim_x = self.dim_y = d
        self.n_inner, self.n_outer = 1, STREAM
        self.x0 = torch.zeros(d, **to)
        self.y0 = torch.zeros(d, **to)

    # ----------------------------------------------------------------------------- F
    def _coords(self, y):
        """z = y / lam; the chain coordinates u (rotated: U^T rho(z)) and rho's scale."""
        z = y / self.lam
        if self.u is None:
            return z, z, None
        s = torch.sqrt(1 + z.square().sum(-1, keepdim=True) / self.radius ** 2)
        return z, (z / s) @ self.u, s

    def _lift(self, z, gu, s):
        """d/dz of the chain term (and, rotated, of rho and the coercive term) from d/du."""
        if self.u is None:
            return gu
        w = gu @ self.u.T
        zw = (z * w).sum(-1, keepdim=True)
        return w / s - z * zw / (self.radius ** 2 * s ** 3) + z / 5

    def F(self, y: torch.Tensor) -> torch.Tensor:
        z, u, _ = self._coords(y)
        value = chain(u, grad=False)[0]
        if self.u is not None:
            value = value + z.square().sum(-1) / 10
        return self.a * value

    def grad_F(self, y: torch.Tensor) -> torch.Tensor:
        z, u, s = self._coords(y)
        return (self.a / self.lam) * self._lift(z, chain(u)[1], s)

    def _oracle(self, y: torch.Tensor, idx: Index) -> torch.Tensor:
        """The mean of the per-sample oracles O(y; id) over the batch idx."""
        ids = stream_ids(idx)
        if self.fam == "h3":
            zeta = normals(self.key, ids, self.dim_y).to(y).mean(0) / math.sqrt(self.dim_y)
            return self.grad_F(y) + self.noise * zeta
        xi = (uniforms(self.key, ids) < self.p).to(y).mean()          # one Bernoulli(p) per sample
        z, u, s = self._coords(y)
        gu = chain(u)[1]
        gu = gu * (1 + reveal_weight(u, self.fam) * (xi / self.p - 1))
        return (self.a / self.lam) * self._lift(z, gu, s)

    # ------------------------------------------------------------------ objectives
    def g(self, x, y, idx: Index = None):
        return 0.5 * (y - x).square().sum(-1)

    def f(self, x, y, idx: Index = None):
        """F(y): the value oracle is noiseless (module docstring)."""
        return self.F(y)

    # ---------------------------------------------------------------- analytic oracles
    def grad_g_xy(self, x, y, idx: Index = None):
        r = y - x
        return -r, r

    def grad_f(self, x, y, idx: Index = None):
        return torch.zeros_like(x), self._oracle(y, idx)

    def hvp_cross(self, x, y, v, idx: Index = None):
        return v.clone(), -v

    def y_star(self, x):
        return x.clone()

    def hypergradient(self, x):
        return self.grad_F(x)

    def value(self, x):
        return self.F(x)

    # -------------------------------------------------------------------- metrics
    def metrics(self, x, y):
        out = super().metrics(x, y)
        with torch.no_grad():
            u = self._coords(x)[1]
            out["chain_progress"] = float(prog(u, 0.5)) / self.T   # share of the chain revealed
        return out

    def info(self):
        return {**super().info(), "streaming": True, "family": self.fam, "level": self.params.level,
                "eps": self.eps, "T": self.T, "p": self.p,
                "floor": self.T / self.p if self.fam != "h3" else None}

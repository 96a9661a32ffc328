"""Multimodal VAE with product-of-experts inference (Wu & Goodman, NeurIPS 2018).

Why this design: imaging and omics are rarely both measured. Each modality has a Gaussian encoder
(an "expert"); the posterior over the shared latent is the product of the experts that are present
and a standard-normal prior expert, so any subset of modalities can be encoded and a missing one
simply drops out. Training uses every patient: paired patients contribute the joint ELBO and each
single-modality ELBO that reconstructs *both* modalities (the cross-modal term behind virtual
transcriptomics); unpaired patients contribute their own ELBO. Feature groups are dropped at random
on the input side (the full observation stays the target), so partial studies (cine only, no
mapping) encode sensibly, with a wider posterior.

Site: a one-hot site code is a covariate to encoders and decoders (conditional VAE), so the latent
need not carry scanner effects; it is dropped at random in training so an unknown site (code all
zero) is a valid input.
"""

from __future__ import annotations

import time

import numpy as np
import structlog
import torch
from torch import nn

from .base import MODALITIES, Encoding
from .features import IMAGING_FEATURES, IMAGING_GROUPS, FusionData

log = structlog.get_logger("cardiomics.models.fusion")


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))


class MVAENet(nn.Module):
    def __init__(self, n_img: int, n_om: int, n_sites: int, latent: int = 8, hidden: int = 96) -> None:
        super().__init__()
        self.config = dict(n_img=n_img, n_om=n_om, n_sites=n_sites, latent=latent, hidden=hidden)
        self.enc_img = _mlp(2 * n_img + n_sites, hidden, 2 * latent)
        self.enc_om = _mlp(2 * n_om + n_sites, hidden, 2 * latent)
        self.dec_img = _mlp(latent + n_sites, hidden, n_img)
        self.dec_om = _mlp(latent + n_sites, hidden, n_om)
        self.logsig_img = nn.Parameter(torch.full((n_img,), -1.0))
        self.logsig_om = nn.Parameter(torch.full((n_om,), -1.0))
        self.latent = latent

    @staticmethod
    def _expert(enc: nn.Module, x: torch.Tensor, m: torch.Tensor, s: torch.Tensor):
        out = enc(torch.cat([x * m, m, s], 1))
        mu, logvar = out.chunk(2, 1)
        return mu, logvar.clamp(-8.0, 6.0)

    def posterior(self, xi, mi, xo, mo, s, use_img: torch.Tensor, use_om: torch.Tensor):
        """Product of the prior and the present experts; ``use_*`` (n,) say which experts each row has."""
        mu_i, lv_i = self._expert(self.enc_img, xi, mi, s)
        mu_o, lv_o = self._expert(self.enc_om, xo, mo, s)
        t_i = torch.exp(-lv_i) * use_img[:, None]
        t_o = torch.exp(-lv_o) * use_om[:, None]
        prec = 1.0 + t_i + t_o
        mu = (mu_i * t_i + mu_o * t_o) / prec
        return mu, -torch.log(prec)

    def decode(self, z, s):
        zs = torch.cat([z, s], 1)
        return self.dec_img(zs), self.dec_om(zs)


def _nll(x, mean, logsig, m):
    r = (x - mean) / torch.exp(logsig)
    return ((0.5 * r * r + logsig) * m).sum(1)


class MVAE:
    """Fusion model interface around :class:`MVAENet` (CPU, small)."""

    name = "mvae"

    def __init__(self, n_programmes: int, n_sites: int, latent: int = 12, hidden: int = 128, epochs: int = 300,
                 batch_size: int = 256, lr: float = 2e-3, beta: float = 0.5, seed: int = 0, threads: int = 1,
                 group_dropout: float = 0.15, site_dropout: float = 0.2) -> None:
        self.n_programmes, self.n_sites = n_programmes, n_sites
        self.hp = dict(latent=latent, hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr, beta=beta, seed=seed,
                       group_dropout=group_dropout, site_dropout=site_dropout)
        self.threads = threads
        self.net: MVAENet | None = None
        self.history: list[float] = []
        self.train_seconds = 0.0
        self._groups = [torch.tensor([IMAGING_FEATURES.index(f) for f in g]) for g in IMAGING_GROUPS.values()]

    # ---- tensors
    def _site(self, site: np.ndarray) -> torch.Tensor:
        s = torch.zeros(len(site), self.n_sites)
        known = (site >= 0) & (site < self.n_sites)
        s[np.flatnonzero(known), site[known]] = 1.0
        return s

    @staticmethod
    def _xm(a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        m = ~np.isnan(a)
        return torch.from_numpy(np.nan_to_num(a).astype(np.float32)), torch.from_numpy(m.astype(np.float32))

    def _drop(self, mi: torch.Tensor, mo: torch.Tensor, g: torch.Generator):
        """Randomly hide whole imaging groups and the omics PCs on the input side."""
        p = self.hp["group_dropout"]
        mi = mi.clone()
        for idx in self._groups:
            rows = torch.nonzero(torch.rand(mi.shape[0], generator=g) < p).flatten()
            if len(rows):
                mi[rows[:, None], idx[None, :]] = 0.0
        mo = mo.clone()
        hide = torch.rand(mo.shape[0], generator=g) < p
        rows = torch.nonzero(hide).flatten()
        if len(rows):
            mo[rows, self.n_programmes:] = 0.0
        return mi, mo

    # ---- training
    def fit(self, data: FusionData) -> MVAE:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # small nets: one thread is fastest on a shared CPU
        try:
            return self._fit(data)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, data: FusionData) -> MVAE:
        torch.manual_seed(self.hp["seed"])
        g = torch.Generator().manual_seed(self.hp["seed"])
        xi, mi = self._xm(data.imaging)
        xo, mo = self._xm(data.omics)
        s_all = self._site(data.site)
        self.net = MVAENet(xi.shape[1], xo.shape[1], self.n_sites, self.hp["latent"], self.hp["hidden"])
        opt = torch.optim.Adam(self.net.parameters(), lr=self.hp["lr"])
        n, bs, epochs = len(data), self.hp["batch_size"], self.hp["epochs"]
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hp["lr"], total_steps=epochs * ((n + bs - 1) // bs))
        started = time.perf_counter()
        self.net.train()
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=g)
            total = 0.0
            beta = self.hp["beta"] * min(1.0, (epoch + 1) / (0.2 * epochs))
            for b in range(0, n, bs):
                idx = perm[b:b + bs]
                loss = self._loss(xi[idx], mi[idx], xo[idx], mo[idx], s_all[idx], g, beta)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            self.history.append(total / n)
        self.train_seconds = time.perf_counter() - started
        self.net.eval()
        log.info("mvae_trained", epochs=epochs, seconds=round(self.train_seconds, 1), final_loss=round(self.history[-1], 3))
        return self

    def _loss(self, xi, mi, xo, mo, s, g, beta):
        net = self.net
        mi_in, mo_in = self._drop(mi, mo, g)
        keep_site = (torch.rand(len(s), generator=g) >= self.hp["site_dropout"]).float()[:, None]
        s_in = s * keep_site
        has_i = (mi_in.sum(1) > 0).float()
        has_o = (mo_in.sum(1) > 0).float()
        total = 0.0
        for use_i, use_o, w in ((has_i, has_o, torch.ones_like(has_i)), (has_i, torch.zeros_like(has_i), has_i),
                                (torch.zeros_like(has_o), has_o, has_o)):
            if float(w.sum()) == 0:
                continue
            mu, logvar = net.posterior(xi, mi_in, xo, mo_in, s_in, use_i, use_o)
            z = mu + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * logvar)
            pi, po = net.decode(z, s_in)
            rec = _nll(xi, pi, net.logsig_img, mi) + _nll(xo, po, net.logsig_om, mo)
            kl = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(1)
            total = total + ((rec + beta * kl) * w).sum() / len(w)
        return total

    # ---- inference
    def _posterior(self, data: FusionData, modalities: tuple[str, ...]):
        xi, mi = self._xm(data.imaging)
        xo, mo = self._xm(data.omics)
        use_i = (mi.sum(1) > 0).float() * float("imaging" in modalities)
        use_o = (mo.sum(1) > 0).float() * float("omics" in modalities)
        return self.net.posterior(xi, mi, xo, mo, self._site(data.site), use_i, use_o)

    @torch.no_grad()
    def encode(self, data: FusionData, modalities: tuple[str, ...] = MODALITIES) -> Encoding:
        mu, logvar = self._posterior(data, modalities)
        return Encoding(mu.numpy().astype(np.float64), torch.exp(0.5 * logvar).numpy().astype(np.float64))

    @torch.no_grad()
    def predict_programmes(self, data: FusionData) -> np.ndarray:
        mu, _ = self._posterior(data, ("imaging",))
        _, po = self.net.decode(mu, torch.zeros(len(data), self.n_sites))  # site-free: the average site
        return po[:, : self.n_programmes].numpy().astype(np.float64)

    def attribution(self, data: FusionData, programme: int, steps: int = 32) -> np.ndarray:
        """Integrated gradients of one predicted programme w.r.t. each observed imaging feature.

        Baseline: the reference-cohort mean patient (all standardised features 0, same observed set).
        Attributions of a row sum to prediction(x) - prediction(baseline) (completeness), up to the
        Riemann-sum error; unobserved features get 0.
        """
        xi, mi = self._xm(data.imaging)
        xo, mo = self._xm(data.omics)
        s = self._site(data.site)
        use_i, use_o = (mi.sum(1) > 0).float(), torch.zeros(len(data))
        grads = torch.zeros_like(xi)
        for a in (np.arange(steps) + 0.5) / steps:
            x = (xi * float(a)).requires_grad_(True)
            mu, _ = self.net.posterior(x, mi, xo, mo, s, use_i, use_o)
            _, po = self.net.decode(mu, torch.zeros_like(s))
            (g,) = torch.autograd.grad(po[:, programme].sum(), x)
            grads += g / steps
        return (grads * xi * mi).numpy().astype(np.float64)

    # ---- persistence
    def state(self) -> dict:
        return {"config": self.net.config, "hp": self.hp, "n_programmes": self.n_programmes,
                "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, st: dict) -> MVAE:
        hp = {k: v for k, v in st["hp"].items()}
        m = cls(int(st["n_programmes"]), int(st["config"]["n_sites"]), **hp)
        m.net = MVAENet(**st["config"])
        m.net.load_state_dict(st["state_dict"])
        m.net.eval()
        return m

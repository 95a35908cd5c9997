"""Contrast transfer: the microscope's aberrations, phase plate and envelopes.

Conventions (as in RELION/CTFFIND): defocus is positive for underfocus; the phase aberration is

    gamma(k) = pi lambda dz(theta) k^2 - pi/2 Cs lambda^3 k^4 + phase_shift,
    dz(theta) = (dz_u + dz_v)/2 + (dz_u - dz_v)/2 cos(2 (theta - theta_ast)),

the exit wave ``exp(i phi - eta phi)`` (eta = A / sqrt(1 - A^2) makes amplitude contrast A) is multiplied
in Fourier space by ``E(k) exp(i gamma(k))``, and for a weak object the image contrast is then

    I(k) = 2 CTF(k) E(k) phi(k),   CTF(k) = -(sqrt(1 - A^2) sin gamma + A cos gamma),

so a protein (positive potential) appears dark at low frequency. Envelopes E: a B-factor exp(-B k^2 / 4),
spatial coherence (beam divergence alpha), temporal coherence (chromatic aberration Cc, energy spread)
and uniform linear drift (a sinc along the drift direction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .scattering import wavelength_A


@dataclass(frozen=True)
class CTFParams:
    """One micrograph's imaging conditions (Å, degrees, mm, kV)."""

    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_u_A: float = 15000.0
    defocus_v_A: float = 15000.0
    astigmatism_angle_deg: float = 0.0
    phase_shift_deg: float = 0.0
    bfactor_A2: float = 0.0
    beam_divergence_mrad: float = 0.0
    energy_spread_eV: float = 0.0
    cc_mm: float = 2.7
    drift_A: float = 0.0
    drift_angle_deg: float = 0.0

    @property
    def wavelength_A(self) -> float:
        return wavelength_A(self.voltage_kV)

    @property
    def defocus_A(self) -> float:
        return 0.5 * (self.defocus_u_A + self.defocus_v_A)

    def to_dict(self) -> dict:
        return asdict(self)


def gamma(params: CTFParams, k: np.ndarray, theta: np.ndarray | float = 0.0) -> np.ndarray:
    """Phase aberration (rad) at spatial frequency ``k`` (Å^-1) and azimuth ``theta`` (rad)."""
    lam = params.wavelength_A
    dz = params.defocus_A + (0.5 * (params.defocus_u_A - params.defocus_v_A)) * np.cos(
        2.0 * (np.asarray(theta) - math.radians(params.astigmatism_angle_deg)))
    k2 = np.asarray(k) ** 2
    cs = params.cs_mm * 1e7
    return (math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2
            + math.radians(params.phase_shift_deg))


def ctf_1d(params: CTFParams, k: np.ndarray, theta: np.ndarray | float = 0.0) -> np.ndarray:
    """Weak-object CTF (no envelope): ``-(sqrt(1 - A^2) sin gamma + A cos gamma)``."""
    a = params.amplitude_contrast
    g = gamma(params, k, theta)
    return -(math.sqrt(1.0 - a * a) * np.sin(g) + a * np.cos(g))


def envelope(params: CTFParams, k: np.ndarray, kx: np.ndarray | None = None, ky: np.ndarray | None = None,
             theta: np.ndarray | float = 0.0) -> np.ndarray:
    """Product of the B-factor, coherence and drift envelopes at frequency ``k`` (Å^-1)."""
    lam = params.wavelength_A
    k = np.asarray(k)
    env = np.exp(-params.bfactor_A2 / 4.0 * k**2)
    if params.beam_divergence_mrad > 0:
        alpha = params.beam_divergence_mrad * 1e-3
        dz = params.defocus_A + 0.5 * (params.defocus_u_A - params.defocus_v_A) * np.cos(
            2.0 * (np.asarray(theta) - math.radians(params.astigmatism_angle_deg)))
        grad = (params.cs_mm * 1e7 * lam**3) * k**3 - (dz * lam) * k  # d gamma / dk / (2 pi)
        env = env * np.exp(-((math.pi * alpha / lam) ** 2) * grad**2)
    if params.energy_spread_eV > 0 and params.cc_mm > 0:
        delta = params.cc_mm * 1e7 * params.energy_spread_eV / (params.voltage_kV * 1e3)
        env = env * np.exp(-0.5 * (math.pi * lam * delta) ** 2 * (k * k) ** 2)
    if params.drift_A > 0 and kx is not None and ky is not None:
        a = math.radians(params.drift_angle_deg)
        env = env * np.sinc(params.drift_A * (kx * math.cos(a) + ky * math.sin(a)))
    return env


@lru_cache(maxsize=8)
def _grid(shape: tuple[int, int], pixel_size_A: float):
    ky = np.fft.fftfreq(shape[0], d=pixel_size_A).astype(np.float32)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_size_A).astype(np.float32)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    theta = np.arctan2(ky, kx)
    return kx, ky, k, theta


def wave_transfer(params: CTFParams, shape: tuple[int, int], pixel_size_A: float) -> np.ndarray:
    """``E(k) exp(i gamma(k))`` on the full FFT grid of an image of ``shape`` (complex64)."""
    kx, ky, k, theta = _grid(tuple(shape), float(pixel_size_A))
    g = gamma(params, k, theta).astype(np.float32)
    env = envelope(params, k, kx, ky, theta).astype(np.float32)
    out = np.empty(g.shape, dtype=np.complex64)
    out.real = env * np.cos(g)
    out.imag = env * np.sin(g)
    return out


def ctf_2d(params: CTFParams, shape: tuple[int, int], pixel_size_A: float, with_envelope: bool = True
           ) -> np.ndarray:
    """Weak-object CTF on the full FFT grid (float32), optionally times the envelope."""
    kx, ky, k, theta = _grid(tuple(shape), float(pixel_size_A))
    c = ctf_1d(params, k, theta)
    if with_envelope:
        c = c * envelope(params, k, kx, ky, theta)
    return c.astype(np.float32)


def ctf_zeros_inv_A(params: CTFParams, n: int = 10, theta: float | None = None) -> np.ndarray:
    """Spatial frequencies (Å^-1) of the first ``n`` zeros of the CTF along azimuth ``theta``.

    Zeros satisfy ``gamma(k) = m pi - atan(A / sqrt(1 - A^2))`` for whole m; with Cs the quadratic in
    k^2 is solved for its smaller root. ``theta=None`` uses the mean defocus.
    """
    lam = params.wavelength_A
    a = params.amplitude_contrast
    offset = math.atan2(a, math.sqrt(1.0 - a * a))
    if theta is None:
        dz = params.defocus_A
    else:
        dz = params.defocus_A + 0.5 * (params.defocus_u_A - params.defocus_v_A) * math.cos(
            2.0 * (theta - math.radians(params.astigmatism_angle_deg)))
    cs = params.cs_mm * 1e7
    shift = math.radians(params.phase_shift_deg)
    out = []
    m = 0
    while len(out) < n and m < 10000:
        target = m * math.pi - offset - shift  # pi lam dz k^2 - pi/2 cs lam^3 k^4 = target
        m += 1
        if target <= 0:
            continue
        a2 = 0.5 * math.pi * cs * lam**3
        b2 = math.pi * lam * dz
        if a2 == 0:
            out.append(math.sqrt(target / b2))
            continue
        disc = b2 * b2 - 4 * a2 * target
        if disc < 0:
            break
        out.append(math.sqrt((b2 - math.sqrt(disc)) / (2 * a2)))
    return np.asarray(out)

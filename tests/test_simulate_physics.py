"""Physics of the simulator: scattering factors, projections, CTF zeros, dose and noise."""

import math

import numpy as np
import pytest

from hydrapick.config import SimulationConfig
from hydrapick.simulation import (
    CTFParams,
    ctf_1d,
    ctf_zeros_inv_A,
    procedural_structure,
    project_structure,
    simulate_micrograph,
)
from hydrapick.simulation import scattering as sc
from hydrapick.simulation.projection import build_view_bank, render_views
from hydrapick.simulation.structures import AtomType, Structure

# Everything off that is not under test: a clean, deterministic field of view.
QUIET = dict(carbon_probability=0.0, continuous_carbon_probability=0.0, contamination_probability=0.0,
             ice_crystal_probability=0.0, aggregate_probability=0.0, junk_fraction_range=(0.0, 0.0),
             blemish_probability=0.0, hot_pixel_probability=0.0, illumination_gradient_range=(0.0, 0.0),
             ice_gradient_range=(0.0, 0.0), phase_plate_probability=0.0, n_views=8)


@pytest.fixture(scope="module")
def small():
    return procedural_structure("globular", 11, mass_kDa=60)


def test_wavelength_and_interaction_constant():
    assert sc.wavelength_A(300) == pytest.approx(0.019687, rel=1e-4)
    assert sc.wavelength_A(200) == pytest.approx(0.025079, rel=1e-4)
    assert sc.interaction_constant(300) == pytest.approx(6.526e-4, rel=2e-3)


def test_scattering_factor_and_projected_potential_agree():
    a, _ = sc.PENG_1996["C"]
    assert sc.scattering_factor("C", 0.0) == pytest.approx(sum(a))
    # The analytic projected potential integrates to the transform at q = 0 (47.878 f(0) V Å^3).
    r = np.linspace(0, 8, 4001)
    integral = np.trapezoid(sc.projected_atom_potential("N", r) * 2 * np.pi * r, r)
    assert integral == pytest.approx(sc.atom_potential_ft("N", 0.0), rel=1e-4)
    assert sc.element_symbol("SE") == "Zn" and sc.element_symbol("fe") == "Fe"
    with pytest.raises(ValueError):
        sc.element_symbol("Xq")


def test_ice_mean_inner_potential_is_physical():
    # Neutral-atom mean inner potentials: vitreous ice ~4.5 V, amorphous carbon ~12 V.
    assert 4.0 < sc.ICE_MIP_V < 5.0
    assert 10.0 < sc.CARBON_MIP_V < 13.0


def test_single_atom_projection_matches_analytic_profile():
    atom = Structure("C", np.zeros((1, 3), np.float32), np.zeros(1, np.int16), (AtomType("C", 0.0, 0.0),),
                     b_factor_A2=20.0)
    p = 0.5
    img = project_structure(atom, np.eye(3), p, box_px=64)
    r = np.hypot(*(np.indices((64, 64)) - 32)) * p
    expected = sc.projected_atom_potential("C", r, 20.0)
    assert np.unravel_index(img.argmax(), img.shape) == (32, 32)
    assert img.sum() * p * p == pytest.approx(sc.atom_potential_ft("C", 0.0), rel=1e-4)
    assert np.abs(img - expected).max() < 0.05 * expected.max()


def test_projection_integral_is_the_excess_over_displaced_ice(small):
    p = 2.0
    img = project_structure(small, np.eye(3), p)
    per_type = np.array([sc.atom_potential_ft(t.element, 0.0) + t.hydrogens * sc.atom_potential_ft("H", 0.0)
                         - sc.ICE_MIP_V * t.volume_A3 for t in small.types])
    expected = per_type[small.atom_type].sum()
    assert img.sum() * p * p == pytest.approx(expected, rel=1e-3)
    assert expected > 0  # protein is denser in potential than the ice it displaces


def _lowpass(a, frac):
    f = np.hypot(np.fft.fftfreq(a.shape[0])[:, None], np.fft.fftfreq(a.shape[1])[None, :])
    return np.real(np.fft.ifft2(np.fft.fft2(a) * (f < 0.5 * frac)))


def test_bank_render_matches_direct_projection(small):
    bank = build_view_bank(small, 1.0, 3.0, n_views=4, n_fragments=0)
    for p, psi in ((1.3, 0.6), (2.2, -2.0)):
        view = 2
        c, s = math.cos(psi), math.sin(psi)
        rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        direct = project_structure(small, rz @ bank.rotations[view], p, box_px=80)
        canvas = np.zeros((80, 80), np.float32)
        render_views(canvas, bank.level_for(p), np.array([view]), np.array([40.0]), np.array([40.0]),
                     np.array([psi]), p)
        corr = np.corrcoef(_lowpass(direct, 0.7).ravel(), _lowpass(canvas, 0.7).ravel())[0, 1]
        assert corr > 0.99
        assert canvas.sum() == pytest.approx(direct.sum(), rel=0.02)


def test_ctf_zeros_formula():
    params = CTFParams(voltage_kV=300, cs_mm=2.7, amplitude_contrast=0.1, defocus_u_A=20000,
                       defocus_v_A=20000)
    zeros = ctf_zeros_inv_A(params, 8)
    assert np.all(np.diff(zeros) > 0)
    assert np.abs(ctf_1d(params, zeros)).max() < 1e-9
    # Without Cs and amplitude contrast the n-th zero is at sqrt(n / (lambda dz)).
    plain = CTFParams(cs_mm=0.0, amplitude_contrast=0.0, defocus_u_A=15000, defocus_v_A=15000)
    lam = sc.wavelength_A(300)
    assert ctf_zeros_inv_A(plain, 3) == pytest.approx(np.sqrt(np.arange(1, 4) / (lam * 15000)))


def _radial_power(img, pixel_size_A):
    # A micrograph is not periodic: taper its edges so they do not leak power into the zeros.
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    d = (img - img.mean()) * window
    power = np.abs(np.fft.fft2(d)) ** 2
    n = img.shape[0]
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]) * n
    r = np.round(f).astype(int).ravel()
    prof = np.bincount(r, power.ravel()) / np.maximum(np.bincount(r), 1)
    return prof[: n // 2], np.arange(n // 2) / (n * pixel_size_A)


def test_power_spectrum_zeros_fall_where_the_ctf_predicts():
    # Thin continuous carbon: white phase noise, so the power spectrum is |CTF|^2 (Thon rings).
    p, n = 1.5, 512
    optics = dict(defocus_um_range=(1.2, 1.2), astigmatism_um_range=(0.0, 0.0), bfactor_A2_range=(10.0, 10.0),
                  drift_A_range=(0.0, 0.0), voltage_kV_choices=(300.0,), cs_mm_choices=(2.7,),
                  amplitude_contrast_range=(0.07, 0.07))
    detector = dict(dose_e_per_A2_range=(800, 800), dqe_range=(1.0, 1.0), mtf_sigma_px_range=(0.0, 0.0),
                    resample_sigma_px_range=(0.0, 0.0),
                    binned_probability=0.0, energy_filter_probability=0.0)
    quiet = {k: v for k, v in QUIET.items() if k != "continuous_carbon_probability"}
    cfg = SimulationConfig(shape_px=(n, n), pixel_size_A_range=(p, p), n_particles=0,
                           continuous_carbon_probability=1.0,
                           continuous_carbon_thickness_A_range=(50.0, 50.0), **optics, **detector, **quiet)
    sim = simulate_micrograph(cfg, 5, procedural_structure("globular", 1, mass_kDa=50))
    prof, k = _radial_power(sim.image, p)
    ctf = CTFParams(**sim.params["conditions"]["ctf"])
    zeros = ctf_zeros_inv_A(ctf, 30)
    zeros = zeros[(zeros > 0.03) & (zeros < 0.9 * k[-1])]
    assert len(zeros) >= 4
    smooth = np.convolve(prof, np.ones(3) / 3, mode="same")
    minima = np.flatnonzero((smooth[1:-1] < smooth[:-2]) & (smooth[1:-1] < smooth[2:])) + 1
    bin_width = k[1]
    all_zeros = ctf_zeros_inv_A(ctf, 40)
    for z in zeros:
        nearest = minima[np.argmin(np.abs(k[minima] - z))]
        assert abs(k[nearest] - z) <= 1.5 * bin_width, (z, k[nearest])
        # The zero is deep compared with the maxima of |CTF|^2 on either side (midway in k^2).
        i = int(np.argmin(np.abs(all_zeros - z)))
        if i == 0:
            continue
        maxima = [np.sqrt((all_zeros[i - 1] ** 2 + z**2) / 2), np.sqrt((all_zeros[i + 1] ** 2 + z**2) / 2)]
        peak = min(smooth[int(round(m / bin_width))] for m in maxima if m < k[-1])
        assert smooth[nearest] < 0.4 * peak, (z, smooth[nearest], peak)


def test_mean_count_matches_dose(small):
    cfg = SimulationConfig(shape_px=(256, 256), energy_filter_probability=0.0, **QUIET)
    for seed in (1, 2):
        sim = simulate_micrograph(cfg, seed, small)
        expected = sim.params["conditions"]["dose_e_per_A2"] * sim.pixel_size_A**2
        assert sim.image.mean() == pytest.approx(expected, rel=0.01)


def test_energy_filter_removes_inelastic_electrons(small):
    cfg = SimulationConfig(shape_px=(256, 256), energy_filter_probability=1.0, n_particles=0,
                           voltage_kV_choices=(300.0,), **QUIET)
    sim = simulate_micrograph(cfg, 3, small)
    thickness = sim.params["ice"]["mean_thickness_A"]
    expected = sim.params["conditions"]["dose_e_per_A2"] * sim.pixel_size_A**2 * math.exp(
        -thickness / sc.inelastic_mfp_ice_A(300))
    assert sim.image.mean() == pytest.approx(expected, rel=0.01)


def test_shot_noise_variance_follows_dose_and_dqe(small):
    cfg = SimulationConfig(shape_px=(256, 256), n_particles=0, mtf_sigma_px_range=(0.0, 0.0),
                           resample_sigma_px_range=(0.0, 0.0),
                           binned_probability=0.0, energy_filter_probability=0.0, dqe_range=(0.5, 0.5),
                           dose_e_per_A2_range=(20.0, 20.0), pixel_size_A_range=(2.0, 2.0), **QUIET)
    sim = simulate_micrograph(cfg, 4, small)
    mean = 20.0 * 4.0
    assert sim.image.mean() == pytest.approx(mean, rel=0.01)
    assert sim.image.var() == pytest.approx(mean / 0.5, rel=0.1)


def test_counting_detector_blurs_signal_not_noise(small):
    def lag1(img):
        d = img - img.mean()
        return float((d[:, 1:] * d[:, :-1]).mean() / d.var())

    base = dict(shape_px=(256, 256), n_particles=0, mtf_sigma_px_range=(0.8, 0.8),
                resample_sigma_px_range=(0.0, 0.0), binned_probability=0.0, **QUIET)
    counting = simulate_micrograph(SimulationConfig(counting_probability=1.0, **base), 6, small)
    integrating = simulate_micrograph(SimulationConfig(counting_probability=0.0, **base), 6, small)
    assert abs(lag1(counting.image)) < 0.05  # white shot noise
    assert lag1(integrating.image) > 0.4  # blurred with the signal


def test_fragments_are_pieces_of_the_particle(small):
    bank = build_view_bank(small, 2.0, 2.0, n_views=4, n_fragments=6, seed=1)
    whole = float(bank.levels[0].views.sum(dim=(1, 2)).mean())
    pieces = bank.fragments[0].views.sum(dim=(1, 2)).numpy()
    # A plane cuts 30-70 % of the atoms off: each piece carries that share of the potential.
    assert np.all(pieces > 0.2 * whole) and np.all(pieces < 0.8 * whole)

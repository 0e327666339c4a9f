"""The built-in synthetic LGE-MRI phantom: a default dataset that needs no download and no licence.

It is written in exactly the export format of real datasets (``images/``, ``masks/``, ``manifest.csv``,
``dataset.json``) so every code path is exercised the same way. Each short-axis slice has a moderately
bright blood pool, a dark (nulled) myocardial ring of varying thickness whose radii are perturbed by
low-order Fourier terms, bright infarct sectors in some slices of some patients, a textured surrounding
with organ-like blobs, a smooth bias field and Rician noise. Everything is drawn from one
``numpy.random.default_rng(seed)`` and computed for all slices at once, so a set of a few hundred slices
takes seconds and is byte-identical on every run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .png import write_image, write_mask

logger = logging.getLogger(__name__)

#: Bump when the generator's output changes, so that caches of older phantoms are not reused.
PHANTOM_VERSION = 1

#: Mask pixel values, in class-index order, as in the real data set.
LABELS: dict[str, int] = {"blood_pool": 255, "background": 128, "myocardium": 0}
_BLOOD, _BACKGROUND, _MYO = 0, 1, 2

SIZE = 128
_HARMONICS = 3  # Fourier orders 1..3 perturb the radii
_MIN_THICKNESS = 3.5  # px in the ellipse frame: keeps blood pool and background apart


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every (H, W) slice of ``field`` by ``sigma`` pixels, via FFT (periodic edges)."""
    fy = np.fft.fftfreq(field.shape[-2])[:, None]
    fx = np.fft.rfftfreq(field.shape[-1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(field) * kernel, s=field.shape[-2:])


def _random_field(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """``n`` smooth random fields with zero mean and unit standard deviation."""
    field = _smooth(rng.standard_normal((n, SIZE, SIZE)), sigma)
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / field.std(axis=(1, 2), keepdims=True)


def _fourier(powers: list[np.ndarray], amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``1 + sum_k amp_k cos(k theta + phase_k)`` per slice, with ``powers[k-1] = exp(i k theta)``.

    ``amp`` and ``phase`` are (N, K); the complex powers avoid a cosine per pixel and harmonic.
    """
    coeff = amp * np.exp(1j * phase)
    return 1.0 + sum((coeff[:, k, None, None] * zk).real for k, zk in enumerate(powers))


def _slice_geometry(rng: np.random.Generator, n_patients: int) -> dict[str, np.ndarray]:
    """Per-slice shape parameters: each patient's heart shrinks from base to apex and drifts a little."""
    n_slices = rng.integers(10, 17, size=n_patients)
    patient = np.repeat(np.arange(n_patients), n_slices)
    position = np.concatenate([np.linspace(0.0, 1.0, k) for k in n_slices])  # 0 = base, 1 = apex
    n = patient.size

    def per_patient(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n_patients)[patient]

    shrink = 1.0 - per_patient(0.35, 0.6) * position**1.5
    geometry = {
        "patient": patient,
        "slice": np.concatenate([np.arange(k) for k in n_slices]),
        "cx": per_patient(56, 72) + rng.normal(0, 1.5, n),
        "cy": per_patient(56, 72) + rng.normal(0, 1.5, n),
        "radius": per_patient(14, 23) * shrink,
        "thickness": per_patient(5, 10) * (0.7 + 0.3 * shrink),
        "elongation": per_patient(0.85, 1.15),
        "angle": per_patient(0, np.pi),
        "endo_amp": rng.uniform(0, 0.06, (n, _HARMONICS)),
        "endo_phase": rng.uniform(0, 2 * np.pi, (n, _HARMONICS)),
        "wall_amp": rng.uniform(0, 0.15, (n, _HARMONICS)),
        "wall_phase": rng.uniform(0, 2 * np.pi, (n, _HARMONICS)),
    }
    # Infarcts: about 60 % of patients, one sector over a run of contiguous slices.
    infarcted = rng.random(n_patients) < 0.6
    first = rng.uniform(0.0, 0.5, n_patients)[patient]
    last = first + rng.uniform(0.3, 0.6, n_patients)[patient]
    geometry["scar"] = infarcted[patient] & (position >= first) & (position <= last)
    geometry["scar_centre"] = per_patient(0, 2 * np.pi) + rng.normal(0, 0.15, n)
    geometry["scar_width"] = per_patient(0.6, 1.8) * rng.uniform(0.8, 1.2, n)  # radians
    geometry["scar_depth"] = np.where(
        rng.random(n_patients) < 0.5,
        1.0,  # transmural or
        rng.uniform(0.35, 0.75, n_patients),
    )[patient]  # subendocardial
    return geometry


def _render(rng: np.random.Generator, g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-index masks, uint8 images and per-slice scar pixel counts for the geometry ``g``."""
    n = g["patient"].size
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dx = xx[None] - g["cx"][:, None, None]
    dy = yy[None] - g["cy"][:, None, None]
    cos_a, sin_a = np.cos(g["angle"])[:, None, None], np.sin(g["angle"])[:, None, None]
    e = g["elongation"][:, None, None]
    u = (dx * cos_a + dy * sin_a) / e
    v = (-dx * sin_a + dy * cos_a) * e
    rho = np.hypot(u, v)
    z = np.exp(1j * np.arctan2(v, u))  # unit phasor of the polar angle
    powers = [z]
    for _ in range(_HARMONICS - 1):
        powers.append(powers[-1] * z)

    endo = g["radius"][:, None, None] * _fourier(powers, g["endo_amp"], g["endo_phase"])
    wall = np.maximum(g["thickness"][:, None, None] * _fourier(powers, g["wall_amp"], g["wall_phase"]), _MIN_THICKNESS)
    masks = np.full((n, SIZE, SIZE), _BACKGROUND, dtype=np.uint8)
    masks[rho < endo + wall] = _MYO
    masks[rho < endo] = _BLOOD

    cos_to_centre = (z * np.exp(-1j * g["scar_centre"])[:, None, None]).real
    in_sector = cos_to_centre > np.cos(g["scar_width"][:, None, None] / 2)
    scar = (masks == _MYO) & in_sector & g["scar"][:, None, None] & (rho - endo < g["scar_depth"][:, None, None] * wall)

    # Tissue: textured surroundings with a few organ-like blobs, nulled myocardium, bright blood and scar.
    p = g["patient"]
    n_patients = int(p.max()) + 1
    tissue = 0.32 + 0.08 * _random_field(rng, n, 6.0) + 0.03 * _random_field(rng, n, 1.5)
    for _ in range(4):
        bx, by = rng.uniform(0, SIZE, n_patients)[p], rng.uniform(0, SIZE, n_patients)[p]
        radius = rng.uniform(6, 18, n_patients)[p]
        level = rng.uniform(-0.2, 0.35, n_patients)[p]
        blob = np.exp(
            -((xx[None] - bx[:, None, None]) ** 2 + (yy[None] - by[:, None, None]) ** 2)
            / (2 * radius[:, None, None] ** 2)
        )
        tissue += level[:, None, None] * blob
    blood_level = rng.uniform(0.55, 0.72, n_patients)[p][:, None, None]
    myo_level = rng.uniform(0.06, 0.14, n_patients)[p][:, None, None]
    scar_level = rng.uniform(0.82, 0.95, n_patients)[p][:, None, None]
    image = np.where(masks == _BLOOD, blood_level + 0.02 * _random_field(rng, n, 3.0), tissue)
    image = np.where(masks == _MYO, myo_level + 0.015 * _random_field(rng, n, 2.0), image)
    image = np.where(scar, scar_level, image)
    image = _smooth(image, 0.7)  # partial-volume blur at the boundaries

    bias = 1.0 + 0.15 * _random_field(rng, n, 40.0)
    sigma = rng.uniform(0.02, 0.05, n_patients)[p][:, None, None]
    real = image * bias + sigma * rng.standard_normal(image.shape)
    imag = sigma * rng.standard_normal(image.shape)
    image = np.hypot(real, imag)  # magnitude of complex Gaussian noise: Rician
    images = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return masks, images, scar.sum(axis=(1, 2))


def generate_phantom(out_dir: Path, n_patients: int = 20, seed: int = 0) -> Path:
    """Write a phantom dataset of ``n_patients`` patients (10-16 slices each) into ``out_dir``."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    geometry = _slice_geometry(rng, n_patients)
    masks, images, scar_pixels = _render(rng, geometry)

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (patient, slice_index) in enumerate(zip(geometry["patient"], geometry["slice"])):
        name = f"Phantom_P{patient:03d}_slice{slice_index:03d}.png"
        write_image(out_dir / "images" / name, images[i])
        write_mask(out_dir / "masks" / name, masks[i], LABELS)
        rows.append(
            {
                "file": name,
                "patient": f"Phantom_P{patient:03d}",
                "slice": int(slice_index),
                "pathology": "infarct" if geometry["scar"][i] else "normal",
                "scar_pixels": int(scar_pixels[i]),
            }
        )
    with (out_dir / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "name": f"lgeseg-phantom-v{PHANTOM_VERSION}",
        "synthetic": True,
        "note": "SYNTHETIC phantom generated by lgeseg.phantom; not patient data, not for scientific claims",
        "modality": "synthetic LGE-MRI short axis",
        "labels": LABELS,
        "num_images": len(rows),
        "num_patients": n_patients,
        "image_size": [SIZE, SIZE],
        "seed": seed,
        "generator_version": PHANTOM_VERSION,
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / "README.txt").write_text(
        f"SYNTHETIC DATA. This folder was generated by lgeseg.phantom (version {PHANTOM_VERSION}, "
        f"seed {seed}).\nIt imitates LGE-MRI short-axis slices (bright blood pool, dark myocardial ring, "
        "bright infarct sectors)\nfor tests and demos only; results on it say nothing about real patients.\n"
        "Masks: 255 blood pool, 0 myocardium, 128 background.\n"
    )
    return out_dir


def phantom_dir() -> Path:
    """The cached default phantom, generated on first use.

    The cache is ``$LGESEG_CACHE/phantom-v{PHANTOM_VERSION}`` or ``~/.cache/lgeseg/phantom-v{...}``.
    It is generated in a temporary folder next to it and renamed into place, so a crash or a concurrent
    process never leaves a half-written phantom behind.
    """
    cache = Path(os.environ.get("LGESEG_CACHE") or Path.home() / ".cache" / "lgeseg").expanduser()
    target = cache / f"phantom-v{PHANTOM_VERSION}"
    if (target / "dataset.json").exists():
        return target
    logger.info("generating the SYNTHETIC phantom dataset (not real patient data) into %s", target)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        generate_phantom(tmp)
        os.rename(tmp, target)
    except OSError:
        if not (target / "dataset.json").exists():  # not just another process winning the race
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target

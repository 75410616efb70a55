"""The images: a participant's chest anatomy in HU, nodule placement and nodule rendering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from namd.data.brock import GROUND_GLASS, PART_SOLID, SOLID
from namd.data.phantom.cohort_draw import Finding, Nodule, NoduleScreen
from namd.data.phantom.constants import POORLY_DEFINED, RIGHT_LOBES, SMOOTH, SPICULATED


@dataclass(frozen=True)
class ScanGeometry:
    """Axial slab geometry; the anatomy is built ``z_pad`` slices taller so screens can shift in z."""

    matrix: int
    pixel_spacing_mm: float
    n_slices: int
    slice_thickness_mm: float
    z_pad: int = 1

    def axes_mm(self, n_slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) voxel-centre coordinates in mm, origin at the image centre."""
        xy = (np.arange(self.matrix) - (self.matrix - 1) / 2.0) * self.pixel_spacing_mm
        z = np.arange(n_slices) * self.slice_thickness_mm
        return (
            z[:, None, None].astype(np.float32),
            xy[None, :, None].astype(np.float32),
            xy[None, None, :].astype(np.float32),
        )


def _ellipse(x, y, cx, cy, a, b, power=2.0):
    return (np.abs((x - cx) / a) ** power + np.abs((y - cy) / b) ** power) <= 1.0


def _smooth_noise(rng, shape, sigma):
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field_ / (field_.std() + 1e-12)


def _boxes(axes, shape, low_mm: np.ndarray, high_mm: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """(row, index box) of every non-empty box holding the voxel centres in [low_mm, high_mm] (z, y, x)."""
    starts = np.array([axis.ravel()[0] for axis in axes])
    steps = np.array([axis.ravel()[1] - axis.ravel()[0] if axis.size > 1 else 1.0 for axis in axes])
    lo = np.maximum(np.floor((np.atleast_2d(low_mm) - starts) / steps).astype(int), 0)
    hi = np.minimum(np.ceil((np.atleast_2d(high_mm) - starts) / steps).astype(int) + 1, shape)
    return [(i, tuple(map(slice, lo[i], hi[i]))) for i in np.flatnonzero((hi > lo).all(axis=1))]


def _blend_capsules(volume, axes, starts, ends, radii_start, radii_end, hu, weight=None, edge_mm=0.8):
    """Blend tapered tubes (vessels, spicules) into ``volume`` with partial-volume edges."""
    zs, ys, xs = axes
    starts, ends = np.atleast_2d(starts), np.atleast_2d(ends)
    radii_start, radii_end = np.atleast_1d(radii_start), np.atleast_1d(radii_end)
    reach = (np.maximum(radii_start, radii_end) + edge_mm)[:, None]
    for i, box in _boxes(
        axes, volume.shape, np.minimum(starts, ends) - reach, np.maximum(starts, ends) + reach
    ):
        p0, d, r0, r1 = starts[i], ends[i] - starts[i], radii_start[i], radii_end[i]
        z, y, x = zs[box[0]] - p0[0], ys[:, box[1]] - p0[1], xs[:, :, box[2]] - p0[2]
        t = np.clip((z * d[0] + y * d[1] + x * d[2]) / max(d @ d, 1e-9), 0.0, 1.0)
        dist = np.sqrt((z - t * d[0]) ** 2 + (y - t * d[1]) ** 2 + (x - t * d[2]) ** 2)
        fraction = np.clip((r0 + (r1 - r0) * t - dist) / edge_mm + 0.5, 0.0, 1.0)
        if weight is not None:
            fraction = fraction * weight[box]
        volume[box] += fraction * (hu - volume[box])


@dataclass
class Anatomy:
    """One participant's chest in the anatomy frame (z-padded), shared by all their screens."""

    hu: np.ndarray
    lobes: np.ndarray
    pleura_distance_mm: np.ndarray


def _vessel_tree(rng, hilum, lateral_sign, n_roots, depth):
    starts, ends, r_start, r_end = [], [], [], []
    stack = []
    flatten = np.array([0.25, 1.0, 1.0])  # a thin axial slab shows vessels that run near its plane
    for _ in range(n_roots):
        direction = (
            np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), lateral_sign * rng.uniform(0.2, 1.0)]) * flatten
        )
        origin = hilum + np.array([rng.uniform(-12, 12), rng.uniform(-20, 20), 0.0])
        stack.append((origin, direction / np.linalg.norm(direction), rng.uniform(3.0, 4.5), 30.0, depth))
    while stack:
        origin, direction, radius, length, level = stack.pop()
        end = origin + direction * length * rng.uniform(0.8, 1.2)
        starts.append(origin), ends.append(end), r_start.append(radius), r_end.append(radius * 0.85)
        if level > 0:
            for _ in range(2):
                child = direction + rng.normal(0.0, 0.5, 3) * flatten
                stack.append((end, child / np.linalg.norm(child), radius * 0.75, length * 0.82, level - 1))
    return np.array(starts), np.array(ends), np.array(r_start), np.array(r_end)


def build_anatomy(
    rng: np.random.Generator, geometry: ScanGeometry, emphysema: bool, findings: list[Finding]
) -> Anatomy:
    """A low-dose chest slab: body wall, mediastinum, bones, table and vessel-filled lungs."""
    n_z = geometry.n_slices + 2 * geometry.z_pad
    shape = (n_z, geometry.matrix, geometry.matrix)
    zs, ys, xs = axes = geometry.axes_mm(n_z)
    half_fov = geometry.matrix * geometry.pixel_spacing_mm / 2.0
    zc = zs.mean()
    grow = 1.0 + 0.004 * (zs - zc)

    body_a = half_fov * rng.uniform(0.86, 0.95)
    body_b = body_a * rng.uniform(0.64, 0.72)
    body_cy = -0.05 * half_fov
    fat = rng.uniform(6.0, 20.0)
    muscle = rng.uniform(8.0, 13.0)
    cav_a, cav_b = body_a - fat - muscle, body_b - fat - muscle
    hu = np.full(shape, -1000.0, dtype=np.float32)

    def paint(mask, value):
        hu[np.broadcast_to(mask, shape)] = value

    paint(_ellipse(xs, ys, 0, body_cy, body_a, body_b), -100.0)
    paint(_ellipse(xs, ys, 0, body_cy, body_a - fat, body_b - fat), 45.0)
    cavity = np.broadcast_to(_ellipse(xs, ys, 0, body_cy, cav_a, cav_b), shape)
    hu[cavity] = 40.0
    table_y = body_cy + body_b + 8.0
    paint((ys > table_y) & (ys < table_y + 6.0) & (np.abs(xs) < 0.9 * half_fov), 120.0)

    lung_cy = body_cy + 0.05 * cav_b
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        lungs |= _ellipse(
            xs, ys, side * 0.5 * cav_a, lung_cy, 0.46 * cav_a * grow, 0.86 * cav_b * grow, power=2.6
        )
    heart_x, heart_y = 0.12 * cav_a, body_cy - 0.2 * cav_b
    heart_fat = _ellipse(xs, ys, heart_x, heart_y, 0.36 * cav_a * grow, 0.5 * cav_b * grow)
    spine_y = body_cy + cav_b - 0.05 * cav_b
    mediastinum = heart_fat | (np.abs(xs) < 0.1 * cav_a) | _ellipse(xs, ys, 0, spine_y, 25.0, 30.0)
    lungs &= cavity & ~mediastinum
    paint(heart_fat, -90.0)
    paint(_ellipse(xs, ys, heart_x, heart_y, 0.31 * cav_a * grow, 0.44 * cav_b * grow), 40.0)
    aorta = _ellipse(xs, ys, 18.0, spine_y - 28.0, 12.0, 12.0)
    paint(_ellipse(xs, ys, 18.0, spine_y - 28.0, 15.0, 15.0), -90.0)
    paint(aorta, 42.0)

    spine_body = _ellipse(xs, ys, 0, spine_y, 17.0, 15.0)
    paint(_ellipse(xs, ys, 0, spine_y + 26.0, 7.0, 14.0), 700.0)
    paint(spine_body, 700.0)
    paint(_ellipse(xs, ys, 0, spine_y, 14.5, 12.5), 230.0)
    paint(_ellipse(xs, ys, 0, spine_y + 19.0, 6.0, 5.0), 20.0)
    for angle in np.concatenate([np.linspace(0.55, 2.45, 6), np.linspace(3.7, 5.6, 6)]) + rng.normal(
        0, 0.05, 12
    ):
        rx = np.cos(angle) * (cav_a + 4.0)
        ry = body_cy + np.sin(angle) * (cav_b + 4.0)
        z0 = rng.uniform(-10.0, zs.max())
        in_slab = (zs >= z0) & (zs <= z0 + 14.0)
        hu[in_slab & _ellipse(xs, ys, rx, ry, 5.5, 5.5)] = 750.0
        hu[in_slab & _ellipse(xs, ys, rx, ry, 3.5, 3.5)] = 280.0

    lung_rows = np.broadcast_to(ys, shape)
    top, bottom = lung_rows[lungs].min(), lung_rows[lungs].max()
    y_frac = (lung_rows - top) / (bottom - top)
    # One texture field: its darkest patches become the low-attenuation areas of emphysema.
    texture = _smooth_noise(rng, shape, (0.8, 2.0, 2.0))
    hu[lungs] = (-875.0 + 70.0 * y_frac + 12.0 * texture)[lungs]
    threshold = np.quantile(texture[lungs], 0.12 if emphysema else 0.015)
    hu[lungs & (texture < threshold)] = -960.0

    lung_weight = lungs.astype(np.float32)
    for side in (-1, 1):
        hilum = np.array([zc, lung_cy - 0.05 * cav_b, side * 0.12 * cav_a])
        starts, ends, r0, r1 = _vessel_tree(rng, hilum, side, n_roots=12, depth=4)
        _blend_capsules(hu, axes, starts, ends, r0, r1, 40.0, weight=lung_weight)
    n_dots = 320
    lung_voxels = np.flatnonzero(lungs)
    centres = np.column_stack(np.unravel_index(rng.choice(lung_voxels, n_dots), shape)).astype(float)
    centres *= [geometry.slice_thickness_mm, geometry.pixel_spacing_mm, geometry.pixel_spacing_mm]
    centres += [0.0, ys.ravel()[0], xs.ravel()[0]]
    directions = rng.normal(0.0, 1.0, (n_dots, 3))
    directions *= rng.uniform(3.0, 9.0, (n_dots, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
    radii = rng.uniform(0.6, 1.3, n_dots)
    _blend_capsules(
        hu, axes, centres - directions, centres + directions, radii, radii * 0.8, 40.0, weight=lung_weight
    )

    # Half in-plane resolution is precise enough for placing nodules and costs a quarter.
    pleura_distance = (
        ndimage.distance_transform_edt(
            lungs[:, ::2, ::2],
            sampling=(
                geometry.slice_thickness_mm,
                2 * geometry.pixel_spacing_mm,
                2 * geometry.pixel_spacing_mm,
            ),
        )
        .repeat(2, axis=1)
        .repeat(2, axis=2)[:, : geometry.matrix, : geometry.matrix]
    )
    for finding in findings:
        if finding.radius_mm > 0:
            candidates = np.flatnonzero(pleura_distance > finding.radius_mm + 1.0)
            if not candidates.size:
                continue
            centre = _voxel_to_mm(np.unravel_index(rng.choice(candidates), shape), axes)
            _blend_capsules(
                hu, axes, [centre], [centre], [finding.radius_mm], [finding.radius_mm], finding.hu
            )

    hu = ndimage.gaussian_filter(hu, (0.3, 0.7, 0.7))
    lobes = np.zeros(shape, dtype=np.int8)
    right = lungs & (xs < 0)
    left = lungs & (xs >= 0)
    for mask, (upper, middle, lower), cut in (
        (right, (1, 2, 3), (0.42, 0.6)),
        (left, (4, 5, 6), (0.45, 0.6)),
    ):
        lobes[mask & (y_frac < cut[0])] = upper
        lobes[mask & (y_frac >= cut[0]) & (y_frac < cut[1])] = middle
        lobes[mask & (y_frac >= cut[1])] = lower
    return Anatomy(hu=hu, lobes=lobes, pleura_distance_mm=pleura_distance)


def _voxel_to_mm(index, axes) -> np.ndarray:
    zs, ys, xs = axes
    return np.array([zs.ravel()[index[0]], ys.ravel()[index[1]], xs.ravel()[index[2]]], dtype=float)


def place_nodules(
    rng: np.random.Generator, anatomy: Anatomy, geometry: ScanGeometry, nodules: list[Nodule]
) -> list[np.ndarray]:
    """Centres (z, y, x mm, anatomy frame) inside each nodule's lobe, clear of pleura and each other.

    Juxtapleural nodules may touch the pleura; when a lobe has no room the nodule goes anywhere in
    the lungs on the same side, so a drawn cohort always renders.
    """
    n_z = anatomy.hu.shape[0]
    axes = geometry.axes_mm(n_z)
    zs = axes[0]
    z_ok = np.zeros(anatomy.hu.shape, dtype=bool)
    z_ok[geometry.z_pad + 2 : n_z - geometry.z_pad - 2] = True
    free = np.ones(anatomy.hu.shape, dtype=bool)
    centres = []
    for nodule in nodules:
        radius = max(s.long_dia_mm for s in nodule.screens.values()) / 2.0
        clearance = 0.5 * radius if nodule.juxtapleural else radius + 2.0
        side = np.isin(anatomy.lobes, RIGHT_LOBES if nodule.lobe in RIGHT_LOBES else (4, 5, 6))
        chosen = None
        for region in (anatomy.lobes == nodule.lobe, side, anatomy.lobes > 0):
            for scale in (1.0, 0.6, 0.3, 0.0):
                candidates = np.flatnonzero(
                    region & z_ok & free & (anatomy.pleura_distance_mm >= clearance * scale)
                )
                if candidates.size:
                    chosen = rng.choice(candidates)
                    break
            if chosen is not None:
                break
        if chosen is None:
            raise RuntimeError(
                f"phantom: no lung voxel left for nodule {nodule.nodule_id}; enlarge the matrix or slab"
            )
        centre = _voxel_to_mm(np.unravel_index(chosen, anatomy.hu.shape), axes)
        centre[1:] += rng.uniform(-0.5, 0.5, 2) * geometry.pixel_spacing_mm
        ys, xs = axes[1], axes[2]
        free &= (zs - centre[0]) ** 2 + (ys - centre[1]) ** 2 + (xs - centre[2]) ** 2 > (radius + 6.0) ** 2
        centres.append(centre)
    return centres


@dataclass(frozen=True)
class NoduleShape:
    """Per-nodule geometry that stays fixed across screens (orientation, lobulation, spicules)."""

    orientation: float
    lobulation_phase: float
    lobulation_order: int
    spicule_directions: np.ndarray
    core_offset: np.ndarray  # (z, u, v) in semi-axes, scaled by the room the core leaves


def draw_shape(rng: np.random.Generator) -> NoduleShape:
    n_spicules = int(rng.integers(6, 13))
    directions = rng.normal(0.0, 1.0, (n_spicules, 3)) * [0.3, 1.0, 1.0]
    return NoduleShape(
        orientation=float(rng.uniform(0, np.pi)),
        lobulation_phase=float(rng.uniform(0, 2 * np.pi)),
        lobulation_order=int(rng.integers(3, 7)),
        spicule_directions=directions / np.linalg.norm(directions, axis=1, keepdims=True),
        core_offset=rng.uniform(-0.6, 0.6, 3),
    )


def render_nodule(
    rng: np.random.Generator,
    volume: np.ndarray,
    axes,
    centre: np.ndarray,
    state: NoduleScreen,
    shape: NoduleShape,
    solid_hu: float,
) -> None:
    """Blend one nodule (ellipsoid, lobulated; halo + core when part-solid; spicules) into ``volume``."""
    zs, ys, xs = axes
    a, b = state.long_dia_mm / 2.0, state.perp_dia_mm / 2.0
    c = (a + b) / 2.0
    reach = a + (a + 4.0 if state.margins == SPICULATED else 4.0)
    boxes = _boxes(axes, volume.shape, centre - reach, centre + reach)
    if not boxes:
        return
    box = boxes[0][1]
    dz, dy, dx = zs[box[0]] - centre[0], ys[:, box[1]] - centre[1], xs[:, :, box[2]] - centre[2]
    u = dx * np.cos(shape.orientation) + dy * np.sin(shape.orientation)
    v = -dx * np.sin(shape.orientation) + dy * np.cos(shape.orientation)
    lobulation = {SMOOTH: 0.04, SPICULATED: 0.12, POORLY_DEFINED: 0.15}[state.margins]
    lobes = 1.0 + lobulation * np.cos(shape.lobulation_order * np.arctan2(v, u) + shape.lobulation_phase)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2) / lobes
    edge_mm = 0.25 * a + 1.5 if state.margins == POORLY_DEFINED else 0.8
    region = volume[box]
    tex = _smooth_noise(rng, region.shape, 1.5)
    halo_hu = state.ggo_hu + 60.0 * tex if state.attenuation != SOLID else solid_hu + 8.0 * tex
    halo = np.clip((1.0 - rho) * a / edge_mm + 0.5, 0.0, 1.0)
    region += halo * (halo_hu - region)
    if state.attenuation == PART_SOLID:
        oz, ou, ov = shape.core_offset * (1.0 - state.core_fraction)
        core_rho = (
            np.sqrt(((u - ou * a) / a) ** 2 + ((v - ov * b) / b) ** 2 + ((dz - oz * c) / c) ** 2) / lobes
        )
        core = np.clip((state.core_fraction - core_rho) * a / 0.8 + 0.5, 0.0, 1.0)
        region += core * (solid_hu + 8.0 * tex - region)
    if state.margins == SPICULATED:
        dirs = shape.spicule_directions
        starts = centre + dirs * a * 0.8
        lengths = a * (0.6 + 0.4 * np.abs(dirs[:, 1:2])) + 3.0
        spicule_hu = solid_hu if state.attenuation != GROUND_GLASS else state.ggo_hu
        _blend_capsules(
            volume,
            axes,
            starts,
            starts + dirs * lengths,
            np.full(len(dirs), 1.0),
            np.full(len(dirs), 0.3),
            spicule_hu,
        )

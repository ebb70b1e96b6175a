"""Procedural camera frames drawn with cv2: a table (wood or white) in front of a wall,
coloured solids with soft shadows, the robot and its gripper, a fixed front camera and a
wrist camera riding on the gripper, per-episode lighting and sensor noise.

Everything is in world coordinates (metres, robot base frame, table top at z=0), projected
through pinhole cameras; solids are convex, yaw-rotated meshes drawn face by face.

Frames are the same bytes on every machine: geometry uses robolake.sample.exact (no BLAS,
no SIMD transcendental functions), resampling robolake.sample.resample (no IPP, no
CPU-dispatched float code), and cv2 only draws with integer arithmetic (anti-aliased
polygons and circles in fixed point, the 8-bit Gaussian blur, pyrDown, saturating adds,
remap on integer maps)."""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from robolake.sample import exact
from robolake.sample.motion import Trajectory
from robolake.sample.resample import resize_cubic, warp_perspective
from robolake.sample.scenario import EpisodeMeta, Layout

RGB = {
    "red": (200, 35, 35), "green": (40, 160, 60), "blue": (35, 75, 195), "yellow": (225, 190, 40),
    "plate": (232, 232, 226), "robot": (176, 178, 182), "hand": (92, 92, 98), "finger": (150, 150, 156),
}
TABLE_X, TABLE_Y, TEXEL = (-0.15, 1.10), (-0.9, 0.9), 0.00125  # table extent and texture resolution (m)
WALL_RGB = np.array([205, 203, 196], np.float32)
SHOULDER = np.array([0.0, 0.0, 0.33])
AA, SHIFT = cv2.LINE_AA, 4  # anti-aliased polygons with 4 bits of sub-pixel precision


@dataclass(frozen=True)
class Light:
    gain: float
    tint: tuple[float, float, float]  # RGB multipliers
    slope: float  # brightness change per metre along y (a lamp on one side)
    direction: tuple[float, float, float]  # towards the light, for shading and shadows
    noise: float  # sensor noise sigma, in grey levels


LIGHTS = {
    "bright": Light(1.10, (1.0, 1.0, 1.0), 0.0, (0.35, 0.25, 1.0), 2.0),
    "dim": Light(0.55, (1.0, 1.0, 1.0), 0.0, (0.35, 0.25, 1.0), 4.5),
    "warm": Light(0.95, (1.10, 0.93, 0.70), 0.0, (0.35, 0.25, 1.0), 2.5),
    "side": Light(0.85, (1.0, 1.0, 1.0), 0.9, (0.1, 1.0, 0.7), 3.0),
}


def is_wrist(camera: str) -> bool:
    """Cameras named like "wrist" or "left_wrist" ride on the gripper; any other is a fixed front view."""
    return "wrist" in camera


def _gain(light: Light, y: np.ndarray | float) -> np.ndarray:
    return np.clip(light.gain * (1.0 + light.slope * np.asarray(y, np.float32)), 0.3, 1.6)


# ---- meshes: vertices (n, 3) in the object frame (z up, origin at the base centre), faces ----


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray
    faces: tuple[np.ndarray, ...]
    normals: np.ndarray  # (faces, 3), outward
    centres: np.ndarray  # (faces, 3)


def _mesh(vertices: np.ndarray, faces: list[list[int]]) -> Mesh:
    faces = tuple(np.array(f) for f in faces)
    centres = np.array([vertices[f].mean(axis=0) for f in faces])
    normals = np.array([np.cross(vertices[f[1]] - vertices[f[0]], vertices[f[2]] - vertices[f[0]]) for f in faces])
    normals *= np.sign(exact.dot(normals, centres - vertices.mean(axis=0)))[:, None]
    return Mesh(vertices, faces, normals / exact.norm(normals, axis=1, keepdims=True), centres)


def _extrusion(outline: np.ndarray, z0: float, z1: float) -> Mesh:
    """A convex outline (n, 2) extruded from z0 to z1: bottom, top and side faces."""
    n = len(outline)
    vertices = np.concatenate([np.c_[outline, np.full(n, z0)], np.c_[outline, np.full(n, z1)]])
    sides = [[i, (i + 1) % n, n + (i + 1) % n, n + i] for i in range(n)]
    return _mesh(vertices, [list(range(n)), list(range(n, 2 * n))] + sides)


def box(sx: float, sy: float, z0: float, z1: float) -> Mesh:
    return _extrusion(np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]]) / 2, z0, z1)


def _polygon(radius: float, sides: int) -> np.ndarray:
    angles = np.arange(sides) * 2 * np.pi / sides
    return radius * np.c_[exact.cos(angles), exact.sin(angles)]


@functools.lru_cache(maxsize=None)
def prop_mesh(shape: str, width: float, height: float) -> Mesh:
    if shape == "cube":
        return box(width, width, 0.0, height)
    if shape == "prism":
        return _extrusion(_polygon(width / np.sqrt(3), 3), 0.0, height)
    return _extrusion(_polygon(width / 2, 20), 0.0, height)  # cylinder, plate


HAND = box(0.05, 0.16, 0.05, 0.11)  # in the tool frame: origin between the finger tips, z up
FINGER = box(0.018, 0.012, 0.0, 0.05)  # moved sideways by half the opening (plus its own half width)


# ---- textures and cameras ----


def _sin32(x: np.ndarray) -> np.ndarray:
    return exact.sin(x.astype(np.float64)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    return resize_cubic(rng.normal(0, 1, cells).astype(np.float32), shape)


@functools.lru_cache(maxsize=4)
def table_texture(scene: str) -> np.ndarray:
    """Unlit float32 RGB texture of the table top; rows run along x, columns along y."""
    rng = np.random.default_rng(zlib.crc32(scene.encode()))
    rows, cols = int((TABLE_X[1] - TABLE_X[0]) / TEXEL), int((TABLE_Y[1] - TABLE_Y[0]) / TEXEL)
    y = np.linspace(*TABLE_Y, cols, dtype=np.float32)[None, :]
    blotch = _smooth_noise(rng, (rows, cols), (12, 16))
    if scene == "white_table":
        shade = 1.0 + 0.025 * blotch + 0.01 * rng.normal(0, 1, (rows, cols)).astype(np.float32)
        return shade[..., None] * np.array([212, 212, 206], np.float32)
    # Wood: planks along x, grain as warped stripes, darker seams between planks.
    plank = np.floor((y - TABLE_Y[0]) / 0.18)
    warp = 0.006 * _smooth_noise(rng, (rows, cols), (6, 60))
    grain = 0.5 + 0.5 * _sin32(2 * np.pi * (y + warp) / 0.009 + 3.0 * plank)
    seam = np.abs((y - TABLE_Y[0]) / 0.18 - np.round((y - TABLE_Y[0]) / 0.18)) * 0.18 < 0.0012
    shade = (0.82 + 0.12 * grain + 0.05 * blotch + 0.04 * _sin32(plank * 2.1)) * np.where(seam, 0.55, 1.0)
    return shade[..., None] * np.array([168, 116, 70], np.float32)


@functools.lru_cache(maxsize=8)
def lit_table(scene: str, lighting: str) -> np.ndarray:
    light = LIGHTS[lighting]
    gain = _gain(light, np.linspace(*TABLE_Y, table_texture(scene).shape[1]))[None, :, None]
    return np.clip(table_texture(scene) * gain * np.array(light.tint, np.float32), 0, 255).astype(np.uint8)


# texture pixel (column, row) -> table point (x, y, 1)
TEXTURE_TO_TABLE = np.array([[0.0, TEXEL, TABLE_X[0]], [TEXEL, 0.0, TABLE_Y[0]], [0.0, 0.0, 1.0]])


class Camera:
    """Pinhole camera: `rotation` rows are the image right, image down and optical axes in world."""

    def __init__(self, height: int, width: int, fov_deg: float):
        half_fov = fov_deg * (np.pi / 180.0) / 2
        focal = (width / 2) / float(exact.sin(half_fov) / exact.cos(half_fov))
        self.size = (height, width)
        self.intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        self.rotation, self.eye = np.eye(3), np.zeros(3)

    def place(self, eye: np.ndarray, forward: np.ndarray, down: np.ndarray) -> None:
        forward = forward / exact.norm(forward)
        down = down - forward * exact.matmul(down, forward)
        down = down / exact.norm(down)
        self.rotation, self.eye = np.stack([np.cross(down, forward), down, forward]), eye

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (n, 2) and depths (n,) of world points (n, 3)."""
        cam = exact.matmul(points - self.eye, self.rotation.T)
        pixels = exact.matmul(cam, self.intrinsics.T)
        return pixels[:, :2] / np.maximum(pixels[:, 2:], 1e-6), cam[:, 2]

    def table_homography(self) -> np.ndarray:
        """Texture pixels -> image pixels, for the table plane z=0."""
        plane = np.c_[self.rotation[:, 0], self.rotation[:, 1], -exact.matmul(self.rotation, self.eye)]
        return exact.matmul(exact.matmul(self.intrinsics, plane), TEXTURE_TO_TABLE)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SHIFT)).astype(np.int32)


# ---- the renderer ----


@dataclass(frozen=True)
class Solid:
    mesh: Mesh
    color: str
    position: np.ndarray  # world position of the mesh origin
    yaw: float

    def world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, s = float(exact.cos(self.yaw)), float(exact.sin(self.yaw))
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
        return (exact.matmul(self.mesh.vertices, rot) + self.position, exact.matmul(self.mesh.normals, rot),
                exact.matmul(self.mesh.centres, rot) + self.position)


class Renderer:
    """Frames of one episode; `frame(name, capture, t)` draws camera `name`'s capture number
    `capture` taken at time `t` (the capture number picks the noise, so a frame is the same
    whichever other frames are drawn)."""

    def __init__(self, meta: EpisodeMeta, layout: Layout, trajectory: Trajectory,
                 cameras: dict[str, tuple[int, int]], captures: dict[str, int], rng: np.random.Generator):
        self.meta, self.layout, self.trajectory = meta, layout, trajectory
        self.light = LIGHTS[meta.lighting]
        direction = np.array(self.light.direction)
        self.light_dir = direction / exact.norm(direction)
        self.table = lit_table(meta.scene, meta.lighting)
        static = [Solid(prop_mesh(p.shape, *p.size), p.color, np.array([p.x, p.y, 0.0]), p.yaw) for p in layout.props]
        static.append(Solid(prop_mesh("cylinder", 0.14, SHOULDER[2]), "robot", np.zeros(3), 0.0))
        self.static = [(s, *s.world()) for s in static]  # (solid, vertices, normals, face centres)
        self.cameras, self.backgrounds, self.noise, self.static_polygons = {}, {}, {}, {}
        for name, (height, width) in cameras.items():
            camera = Camera(height, width, 80.0 if is_wrist(name) else 60.0)
            if not is_wrist(name):
                camera.place(np.array([1.15, 0.0, 0.55]), np.array([-0.73, 0.0, -0.53]), np.array([0.0, 0.0, -1.0]))
                self.backgrounds[name] = self._front_background(camera)
                self.static_polygons[name] = [self._polygons(camera, *s) for s in self.static]
            self.cameras[name] = camera
            self.noise[name] = self._noise_bank(rng, height, width, captures[name])

    def _noise_bank(self, rng: np.random.Generator, height: int, width: int, count: int):
        """Gaussian noise split in its positive and negative parts (for saturating uint8
        add/subtract), larger than a frame, and a random window into it per capture."""
        pad = 16
        noise = np.round(rng.normal(0, self.light.noise, (height + pad, width + pad, 3)))
        offsets = rng.integers(0, pad + 1, (count, 2))
        return np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8), offsets

    def _front_background(self, camera: Camera) -> np.ndarray:
        height, width = camera.size
        rows = np.linspace(0.92, 1.04, height, dtype=np.float32)[:, None, None]
        cols = np.linspace(-0.4, 0.4, width, dtype=np.float32)[None, :, None]  # roughly the wall's y
        wall = WALL_RGB * rows * _gain(self.light, cols) * np.array(self.light.tint, np.float32)
        image = np.ascontiguousarray(np.broadcast_to(np.clip(wall, 0, 255), (height, width, 3)).astype(np.uint8))
        # From a half-resolution texture: the far end of the table would alias at full resolution.
        half = camera.table_homography() * [2.0, 2.0, 1.0]  # @ diag(2, 2, 1)
        warp_perspective(cv2.pyrDown(self.table), half, (width, height), image, cv2.BORDER_TRANSPARENT)
        for _, vertices, _, _ in self.static:
            self._shadow(image, camera, vertices)
        return image

    def _moving(self, t: float, wrist: bool) -> list[Solid]:
        """The target object, the fingers and (except for the wrist camera, which sits on it) the hand."""
        times = np.array([t])
        tool, obj = self.trajectory.tool(times)[0], self.trajectory.object(times)[0]
        target = self.layout.target
        solids = [Solid(prop_mesh(target.shape, *target.size), target.color, obj[:3], obj[3])]
        if not wrist:
            solids.append(Solid(HAND, "hand", tool[:3], tool[3]))
        offset = self.trajectory.width(times)[0] / 2 + 0.006
        sideways = np.array([-exact.sin(tool[3]), exact.cos(tool[3]), 0.0]) * offset
        solids += [Solid(FINGER, "finger", tool[:3] + side * sideways, tool[3]) for side in (-1, 1)]
        return solids

    def _place_wrist(self, camera: Camera, t: float) -> None:
        x, y, z, yaw = self.trajectory.tool(np.array([t]))[0]
        forward = np.array([exact.cos(yaw), exact.sin(yaw), 0.0])
        camera.place(np.array([x, y, z + 0.10]) + 0.05 * forward, np.array([0.0, 0.0, -1.0]), -forward)

    def frame(self, name: str, capture: int, t: float) -> np.ndarray:
        camera = self.cameras[name]
        height, width = camera.size
        wrist = is_wrist(name)
        moving = [(s, *s.world()) for s in self._moving(t, wrist)]
        if wrist:
            self._place_wrist(camera, t)
            image = warp_perspective(self.table, camera.table_homography(), (width, height))
        else:
            image = self.backgrounds[name].copy()  # with the static shadows drawn in
        for _, vertices, _, _ in (self.static + moving) if wrist else moving:
            self._shadow(image, camera, vertices)
        if not wrist:
            self._arm(image, camera, t)
        # Painter's order, far to near; static solids seen by a fixed camera keep their polygons.
        static = self.static_polygons.get(name) or [self._polygons(camera, *s) for s in self.static]
        drawn = static + [self._polygons(camera, *s) for s in moving]
        for _, polygons in sorted(drawn, key=lambda d: -d[0]):
            for points, colour in polygons:
                cv2.fillConvexPoly(image, points, colour, AA, SHIFT)
        positive, negative, offsets = self.noise[name]
        oy, ox = offsets[capture]
        cv2.add(image, positive[oy : oy + height, ox : ox + width], image)
        cv2.subtract(image, negative[oy : oy + height, ox : ox + width], image)
        return image

    def _colour(self, name: str, shade: np.ndarray, y: float) -> np.ndarray:
        base = np.array(RGB[name], np.float32) * np.array(self.light.tint, np.float32) * _gain(self.light, y)
        return np.clip(base[None, :] * shade[:, None], 0, 255)

    def _polygons(self, camera, solid, vertices, normals, centres) -> tuple[float, list]:
        """(distance to the camera, [(fixed-point polygon, colour)]): the silhouette in the mean
        colour (hides anti-aliasing seams between faces), then each face facing the camera."""
        pixels, depth = camera.project(vertices)
        if depth.min() < 0.02:
            return 0.0, []  # behind or at the camera
        visible = np.flatnonzero(exact.dot(normals, camera.eye - centres) > 0)
        shade = 0.45 + 0.55 * np.clip(exact.matmul(normals[visible], self.light_dir), 0.0, 1.0)
        colours = self._colour(solid.color, shade, float(solid.position[1])).tolist()
        points = _fixed(pixels)
        polygons = [(cv2.convexHull(points), np.mean(colours, axis=0).tolist())]
        polygons += [(points[solid.mesh.faces[face]], colour) for face, colour in zip(visible, colours)]
        return float(exact.norm(vertices.mean(axis=0) - camera.eye)), polygons

    def _shadow(self, image: np.ndarray, camera: Camera, vertices: np.ndarray) -> None:
        """Darken the table where the solid's vertices, cast along the light, fall; softer when high."""
        cast = vertices - self.light_dir * (vertices[:, 2:] / self.light_dir[2])
        pixels, depth = camera.project(cast)
        if depth.min() < 0.02:
            return
        height, width = camera.size
        blur = 1 + 2 * int(0.01 * width * (0.2 + 4 * vertices[:, 2].mean()))
        x0, y0 = np.floor(pixels.min(axis=0)).astype(int) - blur
        x1, y1 = np.ceil(pixels.max(axis=0)).astype(int) + blur
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(_fixed(pixels - [x0, y0])), 255, AA, SHIFT)
        mask = cv2.GaussianBlur(mask, (blur, blur), 0)
        roi = image[y0:y1, x0:x1]
        roi[:] = roi * (1.0 - 0.45 / 255 * mask.astype(np.float32))[..., None]

    def _arm(self, image: np.ndarray, camera: Camera, t: float) -> None:
        """Two tapered links from the shoulder to the top of the hand, the elbow bent upward."""
        x, y, z, _ = self.trajectory.tool(np.array([t]))[0]
        wrist = np.array([x, y, z + 0.11])
        elbow = 0.5 * (SHOULDER + wrist) + [-0.05, 0.0, 0.14]
        pixels, depth = camera.project(np.stack([SHOULDER, elbow, wrist]))
        if depth.min() < 0.02:
            return
        radii = camera.intrinsics[0, 0] * np.array([0.06, 0.055, 0.045]) / depth
        for a, shade in ((0, 0.8), (1, 0.95)):
            colour = self._colour("robot", np.array([shade]), 0.0)[0].tolist()
            along = pixels[a + 1] - pixels[a]
            side = np.array([-along[1], along[0]]) / max(float(exact.norm(along)), 1e-6)
            quad = [pixels[a] + side * radii[a], pixels[a + 1] + side * radii[a + 1],
                    pixels[a + 1] - side * radii[a + 1], pixels[a] - side * radii[a]]
            cv2.fillConvexPoly(image, _fixed(np.array(quad)), colour, AA, SHIFT)
            cv2.circle(image, tuple(_fixed(pixels[a + 1])), int(radii[a + 1] * (1 << SHIFT)), colour, -1, AA, SHIFT)

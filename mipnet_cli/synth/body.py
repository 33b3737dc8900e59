"""A small kinematic body model: proportions, joint angles, postures, projection to the image.

Body frame: u = the person's left, v = up, w = the person's forward; lengths are in body heights.
Camera frame (what the renderer sees): x right, y down (image pixels), d towards the camera.
Figure points 0-16 are the COCO-17 keypoints; 17-23 are extra points the renderer needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

HEAD, NECK, PELVIS, L_TOE, R_TOE, L_HAND, R_HAND = range(17, 24)
NUM_POINTS = 24

# Face points in head units (left, up, forward), all inside the unit head sphere.
FACE_LOCAL = np.array([
    [0.0, -0.22, 0.86],    # nose
    [0.34, 0.10, 0.82],    # left eye
    [-0.34, 0.10, 0.82],   # right eye
    [0.88, -0.05, -0.10],  # left ear
    [-0.88, -0.05, -0.10],  # right ear
])
# Unit surface normals at the face points: a face point is hidden by its own head when its
# normal points away from the camera.
FACE_NORMALS = np.array([
    [0.0, -0.15, 1.0], [0.45, 0.1, 0.9], [-0.45, 0.1, 0.9], [1.0, 0.0, -0.1], [-1.0, 0.0, -0.1],
])
FACE_NORMALS /= np.linalg.norm(FACE_NORMALS, axis=1, keepdims=True)


@dataclass(frozen=True)
class Proportions:
    """Segment lengths and girth, in body heights (a standing adult is about 0.96 tall)."""

    shoulder_half: float = 0.105
    hip_half: float = 0.07
    spine: float = 0.30
    neck: float = 0.072
    head_r: float = 0.062
    upper_arm: float = 0.175
    forearm: float = 0.15
    hand: float = 0.07
    thigh: float = 0.235
    shin: float = 0.235
    foot: float = 0.11
    girth: float = 1.0  # multiplies every limb and torso width


def sample_proportions(rng: np.random.Generator) -> Proportions:
    """Per-person variation of the default proportions (a few percent per segment)."""
    base = Proportions()
    jitter = np.clip(rng.normal(1.0, 0.045, 11), 0.88, 1.12)
    names = ("shoulder_half", "hip_half", "spine", "neck", "head_r", "upper_arm", "forearm",
             "hand", "thigh", "shin", "foot")
    values = {n: getattr(base, n) * float(j) for n, j in zip(names, jitter, strict=True)}
    return replace(base, **values, girth=float(rng.uniform(0.85, 1.3)))


@dataclass
class PoseParams:
    """Joint angles in radians; per-side arrays are (left, right)."""

    lean: float = 0.0  # torso pitch, forward positive
    side_bend: float = 0.0
    twist: float = 0.0  # shoulders relative to hips, about the vertical
    head_yaw: float = 0.0
    head_pitch: float = 0.0  # nodding down is positive
    head_roll: float = 0.0
    arm_elev: np.ndarray = field(default_factory=lambda: np.radians([10.0, 10.0]))  # 0 = down
    arm_azim: np.ndarray = field(default_factory=lambda: np.radians([20.0, 20.0]))  # 0 = sideways
    elbow: np.ndarray = field(default_factory=lambda: np.radians([15.0, 15.0]))
    arm_rot: np.ndarray = field(default_factory=lambda: np.radians([20.0, 20.0]))  # bend inwards
    hip_flex: np.ndarray = field(default_factory=lambda: np.zeros(2))  # forward positive
    hip_abd: np.ndarray = field(default_factory=lambda: np.radians([5.0, 5.0]))
    knee: np.ndarray = field(default_factory=lambda: np.radians([5.0, 5.0]))
    foot_yaw: np.ndarray = field(default_factory=lambda: np.radians([10.0, 10.0]))


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


_U, _V, _W = np.eye(3)


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else fallback


def forward_kinematics(pose: PoseParams, prop: Proportions) -> tuple[np.ndarray, np.ndarray]:
    """Figure points (24, 3) in the body frame, pelvis at the origin, and head axes (3, 3).

    The head axes are the columns left, up, forward of the head's rotation.
    """
    p = np.zeros((NUM_POINTS, 3))
    r_spine = _rot(_W, pose.side_bend) @ _rot(_U, pose.lean)
    r_chest = r_spine @ _rot(_V, pose.twist)
    neck = r_spine @ np.array([0.0, prop.spine, 0.0])
    p[NECK] = neck
    r_head = (r_chest @ _rot(_V, pose.head_yaw) @ _rot(_U, pose.head_pitch)
              @ _rot(_W, pose.head_roll))
    p[HEAD] = neck + r_head @ np.array([0.0, prop.neck + 0.35 * prop.head_r, 0.012])
    p[:5] = p[HEAD] + (FACE_LOCAL * prop.head_r) @ r_head.T

    up, fwd = r_chest[:, 1], r_chest[:, 2]
    for i, side in enumerate((1.0, -1.0)):
        out = r_chest[:, 0] * side
        sh = neck + prop.shoulder_half * out - 0.025 * up
        e, a = pose.arm_elev[i], pose.arm_azim[i]
        d_up = -np.cos(e) * up + np.sin(e) * (np.cos(a) * out + np.sin(a) * fwd)
        elbow = sh + prop.upper_arm * d_up
        f_ref = _unit(fwd - (fwd @ d_up) * d_up, -up if e > np.pi / 2 else up)
        beta = side * pose.arm_rot[i]
        bend = f_ref * np.cos(beta) + np.cross(d_up, f_ref) * np.sin(beta)
        d_fore = np.cos(pose.elbow[i]) * d_up + np.sin(pose.elbow[i]) * bend
        wrist = elbow + prop.forearm * d_fore
        p[5 + i], p[7 + i], p[9 + i] = sh, elbow, wrist
        p[L_HAND + i] = wrist + prop.hand * d_fore

        hip_out = _U * side
        hip = hip_out * prop.hip_half - 0.01 * _V
        phi, abd = pose.hip_flex[i], pose.hip_abd[i]
        d_th = -np.cos(phi) * _V + np.sin(phi) * _W
        d_th = np.cos(abd) * d_th + np.sin(abd) * hip_out
        back = -(np.sin(phi) * _V + np.cos(phi) * _W)
        knee = hip + prop.thigh * d_th
        d_sh = _unit(np.cos(pose.knee[i]) * d_th + np.sin(pose.knee[i]) * back, -_V)
        ankle = knee + prop.shin * d_sh
        toe_dir = np.cos(pose.foot_yaw[i]) * _W + np.sin(pose.foot_yaw[i]) * hip_out
        toe_dir = _unit(toe_dir - (toe_dir @ d_sh) * d_sh + 0.25 * d_sh, _W)
        p[11 + i], p[13 + i], p[15 + i] = hip, knee, ankle
        p[L_TOE + i] = ankle + prop.foot * toe_dir
    return p, r_head


def view_rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Body frame -> camera frame (x right, y down, d towards the camera).

    yaw 0 faces the camera, pi/2 faces image right, pi shows the back; pitch > 0 is a camera
    looking down (heads nearer than feet); roll tilts the whole figure in the image plane.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    r_yaw = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    cp, sp = np.cos(pitch), np.sin(pitch)
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # (u, v, d) -> (u, v', d')
    cr, sr = np.cos(roll), np.sin(roll)
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, 1.0])  # v up -> y down
    return flip @ r_roll @ r_pitch @ r_yaw


@dataclass
class Figure:
    """A posed person in camera coordinates: image pixels plus depth (pixels, + = nearer)."""

    points: np.ndarray  # (24, 3)
    head_axes: np.ndarray  # (3, 3) columns: left, up, forward (camera frame, unit)
    scale: float  # pixels per body height
    prop: Proportions

    def moved(self, dx: float, dy: float, dd: float = 0.0) -> Figure:
        return replace(self, points=self.points + np.array([dx, dy, dd]))

    def rescaled(self, factor: float) -> Figure:
        """Scale about the image origin (positions and size together)."""
        return replace(self, points=self.points * factor, scale=self.scale * factor)

    def extent(self) -> np.ndarray:
        """Approximate full-body box x0, y0, x1, y1 including limb thickness and the head."""
        pad = 0.045 * self.prop.girth * self.scale
        xy = self.points[:, :2]
        lo, hi = xy.min(0) - pad, xy.max(0) + pad
        head_r = 1.2 * self.prop.head_r * self.scale
        lo = np.minimum(lo, self.points[HEAD, :2] - head_r)
        hi = np.maximum(hi, self.points[HEAD, :2] + head_r)
        return np.concatenate([lo, hi])


def pose_figure(pose: PoseParams, prop: Proportions, yaw: float, pitch: float = 0.0,
                roll: float = 0.0) -> Figure:
    """Pose, rotate and project a body at 1 pixel per body height, pelvis at the origin."""
    pts, r_head = forward_kinematics(pose, prop)
    rot = view_rotation(yaw, pitch, roll)
    return Figure(points=pts @ rot.T, head_axes=rot @ r_head, scale=1.0, prop=prop)


def gait_pose(phase: float, amplitude: float = 1.0, rng: np.random.Generator | None = None
              ) -> PoseParams:
    """Walking at a point of the gait cycle (phase in radians; heel strike of the left at 0)."""
    ph = np.array([phase, phase + np.pi])
    swing = np.cos(ph)  # > 0 while the leg swings forward
    pose = PoseParams(
        lean=np.radians(4.0),
        twist=np.radians(-6.0 * amplitude) * np.sin(phase),
        hip_flex=np.radians(24.0 * amplitude) * np.sin(ph) + np.radians(4.0),
        hip_abd=np.radians([3.0, 3.0]),
        knee=np.radians(6.0 + 55.0 * amplitude * np.clip(swing, 0, 1) ** 1.5),
        foot_yaw=np.radians([8.0, 8.0]),
    )
    arm = -np.radians(22.0 * amplitude) * np.sin(ph)  # arms swing opposite to the legs
    pose.arm_elev = np.abs(arm) + np.radians(4.0)
    pose.arm_azim = np.where(arm >= 0, np.radians(85.0), np.radians(-85.0))
    pose.elbow = np.radians(15.0) + np.radians(20.0) * np.clip(arm / np.radians(22.0), 0, 1)
    pose.arm_rot = np.radians([10.0, 10.0])
    if rng is not None:
        pose.head_yaw = float(rng.normal(0, np.radians(12.0)))
        pose.head_pitch = float(rng.normal(np.radians(3.0), np.radians(6.0)))
    return pose


def _arm_action(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(elevation, azimuth, elbow, rotation) in degrees for one arm doing something."""
    kind = rng.choice(6, p=[0.22, 0.2, 0.18, 0.12, 0.14, 0.14])
    u = rng.uniform
    if kind == 0:  # hanging
        return u(3, 25), u(-20, 40), u(5, 35), u(0, 40)
    if kind == 1:  # reaching forward
        return u(50, 110), u(60, 100), u(0, 60), u(0, 60)
    if kind == 2:  # raised
        return u(120, 175), u(0, 90), u(0, 70), u(-20, 60)
    if kind == 3:  # out to the side
        return u(60, 110), u(-15, 25), u(0, 50), u(-30, 40)
    if kind == 4:  # forearm in front (phone, cup, crossed arms)
        return u(10, 45), u(50, 95), u(80, 140), u(40, 95)
    return u(25, 45), u(-30, 5), u(90, 125), u(70, 100)  # hand on the hip


def sample_pose(rng: np.random.Generator) -> PoseParams:
    """A plausible random posture: standing, walking, gesturing, crouching, sitting, lunging."""
    kind = rng.choice(7, p=[0.24, 0.24, 0.22, 0.07, 0.06, 0.06, 0.11])
    if kind == 1:
        pose = gait_pose(rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.3), rng)
    else:
        pose = PoseParams()
        u = rng.uniform
        legs = {  # hip flex, abduction, knee, per side ranges in degrees
            0: ((-5, 10), (0, 12), (0, 15)),
            2: ((-5, 12), (0, 14), (0, 20)),
            3: ((60, 110), (5, 35), (70, 135)),
            4: ((70, 95), (0, 25), (70, 105)),
            6: ((-20, 90), (-5, 40), (0, 120)),
        }
        if kind == 5:  # lunge / kick: one leg forward, one back
            front = int(rng.integers(2))
            pose.hip_flex = np.radians([u(35, 90), u(-25, 0)])[[front, 1 - front]]
            pose.knee = np.radians([u(0, 90), u(0, 40)])[[front, 1 - front]]
            pose.hip_abd = np.radians(u(0, 15, 2))
        else:
            (f0, f1), (a0, a1), (k0, k1) = legs[kind]
            pose.hip_flex = np.radians(u(f0, f1, 2))
            pose.hip_abd = np.radians(u(a0, a1, 2))
            pose.knee = np.radians(u(k0, k1, 2))
        pose.foot_yaw = np.radians(u(0, 30, 2))
        if kind == 6:  # anything within joint limits
            arms = np.column_stack([u(0, 175, 2), u(-40, 100, 2), u(0, 145, 2), u(-30, 95, 2)])
        elif kind == 2:
            arms = np.array([_arm_action(rng) for _ in range(2)])
        else:
            arms = np.array([(u(3, 22), u(-20, 40), u(5, 40), u(0, 40)) for _ in range(2)])
        pose.arm_elev, pose.arm_azim, pose.elbow, pose.arm_rot = np.radians(arms.T)
        lean = {3: (15, 45), 4: (-8, 15)}.get(int(kind), (-5, 15))
        pose.lean = float(np.radians(u(*lean)))
        pose.side_bend = float(np.radians(rng.normal(0, 5)))
        pose.twist = float(np.radians(np.clip(rng.normal(0, 12), -35, 35)))
        pose.head_yaw = float(np.radians(np.clip(rng.normal(0, 28), -75, 75)))
        pose.head_pitch = float(np.radians(np.clip(rng.normal(4, 12), -30, 40)))
    pose.head_roll = float(np.radians(np.clip(rng.normal(0, 7), -25, 25)))
    return pose

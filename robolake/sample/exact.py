"""Floating-point helpers that give the same bits on every machine, for the sample generator.

numpy and the BLAS it calls pick code paths by CPU: `np.arctan2` and `np.tan` go through
AVX-512 SVML where the CPU has it, float32 `np.sin` through AVX2/FMA kernels, and `@`,
`np.dot` and 1-D `np.linalg.norm` through OpenBLAS kernels chosen per CPU (Haswell,
SkylakeX, ...), each rounding a little differently; libm (behind `math` and numpy's
scalar fallbacks) differs between C libraries. A last-bit difference in a joint angle
is stored as is; one in a projected vertex occasionally moves a polygon edge by 1/16
pixel, and the compressed files change size.

Everything here is built from IEEE-754 additions, multiplications, divisions and square
roots, one numpy ufunc at a time (each correctly rounded, never fused), in a fixed order:
the same inputs give the same bits on any machine. sin, cos and atan2 are the FreeBSD
msun (fdlibm) algorithms, vectorized: within 1 ulp of the true value (and of numpy's).
Inputs are float64 scalars or arrays (NaN in, NaN out); results are float64 arrays, 0-d
for scalars.
"""

from __future__ import annotations

import numpy as np

# ---- sin, cos: Cody-Waite reduction by pi/2 (three 33-bit parts), then msun's kernels ----

_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e00  # the first 33 bits of pi/2
_PIO2_2, _PIO2_2T = 6.07710050630396597660e-11, 2.02226624879595063154e-21
_MAX_REDUCED = 2.0**19 * 1.5707963267948966  # n * _PIO2_1 and n * _PIO2_2 stay exact below this
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)


def _reduce(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = n * pi/2 + (y0 + y1), |y0 + y1| <= pi/4; returns (n mod 4, y0, y1). NaN and
    infinities come back as NaN."""
    x = np.asarray(x, dtype=np.float64)
    if np.any(np.isfinite(x) & (np.abs(x) > _MAX_REDUCED)):
        raise ValueError(f"exact.sin/cos take |x| <= {_MAX_REDUCED:.0f}")
    n = np.rint(x * _INV_PIO2)
    t = x - n * _PIO2_1  # then the next 33 bits of pi/2, and the rest as a tail (msun's second step)
    w = n * _PIO2_2
    r = t - w
    w = n * _PIO2_2T - ((t - r) - w)
    y0 = r - w
    y1 = (r - y0) - w
    return np.mod(n, 4.0), y0, y1


def _kernel_sin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = x * x
    w = z * z
    r = _S[1] + z * (_S[2] + z * _S[3]) + z * w * (_S[4] + z * _S[5])
    v = z * x
    return x - ((z * (0.5 * y - v * r) - y) - v * _S[0])


def _kernel_cos(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = x * x
    w = z * z
    r = z * (_C[0] + z * (_C[1] + z * _C[2])) + w * w * (_C[3] + z * (_C[4] + z * _C[5]))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


def sin(x) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        n, y0, y1 = _reduce(x)
        s, c = _kernel_sin(y0, y1), _kernel_cos(y0, y1)
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 2.0**-27, x, np.select([n == 0, n == 1, n == 2], [s, c, -s], -c))  # tiny: x


def cos(x) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        n, y0, y1 = _reduce(x)
        s, c = _kernel_sin(y0, y1), _kernel_cos(y0, y1)
    return np.select([n == 0, n == 1, n == 2], [c, -s, -c], s)


# ---- atan, atan2 ----

_ATANHI = np.array([4.63647609000806093515e-01, 7.85398163397448278999e-01,
                    9.82793723247329054082e-01, 1.57079632679489655800e00])
_ATANLO = np.array([2.26987774529616870924e-17, 3.06161699786838301793e-17,
                    1.39033110312309984516e-17, 6.12323399573676603587e-17])
_AT = (3.33333333333329318027e-01, -1.99999999998764832476e-01, 1.42857142725034663711e-01,
       -1.11111104054623557880e-01, 9.09088713343650656196e-02, -7.69187620504482999495e-02,
       6.66107313738753120669e-02, -5.83357013379057348645e-02, 4.97687799461593236017e-02,
       -3.65315727442169155270e-02, 1.62858201153657823623e-02)
_PI, _PI_LO, _PI_O_2 = 3.1415926535897931160e00, 1.2246467991473531772e-16, 1.5707963267948965580e00


def atan(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    # Argument reduction, by interval of |x|: id -1 (none), 0, 1, 2, 3.
    ident = np.select([a < 0.4375, a < 0.6875, a < 1.1875, a < 2.4375], [-1, 0, 1, 2], 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        reduced = np.select(
            [ident < 0, ident == 0, ident == 1, ident == 2],
            [x, (2.0 * a - 1.0) / (2.0 + a), (a - 1.0) / (a + 1.0), (a - 1.5) / (1.0 + 1.5 * a)],
            -1.0 / a,
        )
    z = reduced * reduced
    w = z * z
    s1 = z * (_AT[0] + w * (_AT[2] + w * (_AT[4] + w * (_AT[6] + w * (_AT[8] + w * _AT[10])))))
    s2 = w * (_AT[1] + w * (_AT[3] + w * (_AT[5] + w * (_AT[7] + w * _AT[9]))))
    small = np.where(a < 2.0**-27, x, x - x * (s1 + s2))  # tiny: x itself (keeps -0.0)
    k = np.maximum(ident, 0)
    large = _ATANHI[k] - ((reduced * (s1 + s2) - _ATANLO[k]) - reduced)
    return np.where(ident < 0, small, np.where(x < 0, -large, large))


def atan2(y, x) -> np.ndarray:
    """The angle of (x, y), in [-pi, pi], as C's atan2 (finite inputs)."""
    y, x = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64))
    negative_y, negative_x = np.signbit(y), np.signbit(x)
    exponent_gap = np.frexp(y)[1] - np.frexp(x)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = atan(np.abs(y / x))
    z = np.where(exponent_gap > 60, _PI_O_2 + 0.5 * _PI_LO, np.where(negative_x & (exponent_gap < -60), 0.0, z))
    steep = exponent_gap > 60  # |y| >> |x|: pi/2 whatever the sign of x
    result = np.where(negative_x & ~steep, _PI - (z - _PI_LO), z)
    result = np.where(negative_y, -result, result)
    # Zeros: atan2(+-0, x >= +0) = +-0, atan2(+-0, x <= -0) = +-pi, atan2(y, 0) = +-pi/2.
    result = np.where(x == 0, np.where(negative_y, -_PI_O_2, _PI_O_2), result)
    result = np.where(y == 0, np.where(negative_x, np.where(negative_y, -_PI, _PI), y), result)
    return np.where(x == 1.0, atan(y), result)


def hypot(x, y) -> np.ndarray:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return np.sqrt(x * x + y * y)


# ---- small linear algebra, summed in a fixed order (no BLAS) ----


def matmul(a, b) -> np.ndarray:
    """a @ b for a (..., k) and b (k, m) or (k,): sum over k, term by term in order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    out = a[..., 0:1] * b[0]
    for j in range(1, b.shape[0]):
        out = out + a[..., j : j + 1] * b[j]
    return out[..., 0] if vector else out


def dot(a, b) -> np.ndarray:
    """Dot products over the last axis (broadcasting the others), summed in order."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    total = a[..., 0] * b[..., 0]
    for j in range(1, a.shape[-1]):
        total = total + a[..., j] * b[..., j]
    return total


def norm(v, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """Euclidean length along `axis`, the squares summed in order."""
    v = np.asarray(v, dtype=np.float64)
    v = v if axis in (-1, v.ndim - 1) else np.moveaxis(v, axis, -1)
    length = np.sqrt(dot(v, v))
    return np.expand_dims(length, axis) if keepdims else length


def inverse3(m) -> np.ndarray:
    """Inverse of a 3x3 matrix from its cofactors (Cramer's rule), as OpenCV inverts homographies."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=np.float64).tolist()
    cofactors = np.array([
        [e * i - f * h, c * h - b * i, b * f - c * e],
        [f * g - d * i, a * i - c * g, c * d - a * f],
        [d * h - e * g, b * g - a * h, a * e - b * d],
    ])
    determinant = a * cofactors[0, 0] + b * cofactors[1, 0] + c * cofactors[2, 0]
    return cofactors * (1.0 / determinant)

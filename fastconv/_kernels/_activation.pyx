"""Elementwise activations (ReLU, LeakyReLU, Sigmoid, Tanh), forward and backward.

Every kernel maps flat contiguous buffers of one length, element by element, so the work
is split into fixed chunks that OpenMP threads take in order (``prange(schedule='static')``);
each element is computed the same way on any thread count, so results are bitwise the same
on 1 or many threads. An array of at most one chunk runs on the calling thread: waking the
team costs more than a few thousand elements take. ``out`` may be the input itself (the
in-place forms): each element is read before it is written.

The formulas are those of torch's CPU kernels and of fastconv.reference, element by
element: relu passes NaN and keeps -0.0; the backward of relu selects (``y <= 0 ? 0 : g``,
so an infinite gradient at a zero output gives 0 and a NaN output passes the gradient);
sigmoid and tanh compute float64 with the C library's exp and tanh, and float32 with
:func:`_expf` and :func:`_tanhf` below: glibc's expf and tanhf do not vectorize (one
thread, (256, 6, 28, 28): sigmoid 4.9 ms, tanh 18.8 ms; numpy's SIMD loops 0.97 and
0.43). Those are the Cephes single-precision algorithms written so that GCC vectorizes
the loop (no branch, no libm call): 2.0 and 3.4 ms at the SSE2 baseline, 0.43 and 0.63
ms in the x86-64-v4 build (setup.py builds this module per CPU level). They are within
3 ULP of the true values (tests/test_activation.py measures it against float64; numpy's
own sigmoid is 3.3 ULP off at worst), so not bitwise numpy's.

Callers (fastconv.functional) validate, make the buffers contiguous and allocate ``out``;
nothing here raises or touches a Python object inside ``nogil``.
"""
from cython cimport floating
from cython.parallel cimport prange
# Renamed: the module's own tanh() would shadow the C library's.
from libc.math cimport exp as c_exp, tanh as c_tanh
from libc.stdint cimport int32_t, int64_t, INT32_MAX, INT32_MIN

cdef enum Op:
    RELU
    LEAKY_RELU
    SIGMOID
    TANH
    RELU_BACKWARD
    LEAKY_RELU_BACKWARD
    SIGMOID_BACKWARD
    TANH_BACKWARD

cdef enum:
    # Elements per chunk. The memory-bound ops move ~1 element per cycle; sigmoid and tanh
    # spend tens of cycles in the C library per element, so smaller chunks already pay for
    # a thread.
    CHEAP_CHUNK = 32768
    TRANSCENDENTAL_CHUNK = 4096


cdef union _FloatBits:
    float f
    int32_t i


cdef union _DoubleBits:
    double f
    int64_t i


cdef inline floating _select(bint cond, floating a, floating b) noexcept nogil:
    """``a if cond else b`` through the bits, with no branch for GCC to keep: it does not
    vectorize a conditional of computed floats (it moves the arithmetic into a branch,
    where it could raise a floating-point exception, and keeps the branch)."""
    cdef _FloatBits fa, fb
    cdef _DoubleBits da, db
    if floating is float:
        fa.f, fb.f = a, b
        fa.i = (fa.i & -<int32_t>cond) | (fb.i & ~(-<int32_t>cond))
        return fa.f
    else:
        da.f, db.f = a, b
        da.i = (da.i & -<int64_t>cond) | (db.i & ~(-<int64_t>cond))
        return da.f


cdef inline float _pow2(int32_t k) noexcept nogil:
    """2**k for -126 <= k <= 127, built from its exponent bits (ldexpf is a libm call)."""
    cdef _FloatBits b
    b.i = (k + 127) << 23
    return b.f


cdef inline float _exp_reduced(float t, int32_t* n) noexcept nogil:
    """exp(t) = returned * 2**n[0] in float32 (Cephes expf): t = n*ln2 + r with
    |r| <= ln2/2, and a degree-7 polynomial for exp(r). NaN passes through."""
    cdef float z, r
    # Round to nearest by adding and removing 1.5 * 2**23 (floorf would call libm).
    z = (t * <float>1.44269504088896341 + <float>12582912) - <float>12582912
    # A NaN converted to int is undefined in C (INT_MIN on x86, and n - 1 then overflows):
    # n = 0 there; r stays NaN, and so does the result.
    n[0] = <int32_t>_select(z == z, z, <float>0)
    r = t - z * <float>0.693359375                 # ln2 in two parts: exact z * hi
    r = r - z * <float>-2.12194440e-4
    return (((((<float>1.9875691500e-4 * r + <float>1.3981999507e-3) * r
               + <float>8.3334519073e-3) * r + <float>4.1665795894e-2) * r
             + <float>1.6666665459e-1) * r + <float>5.0000001201e-1) * (r * r) + r + <float>1


cdef inline float _expf(float t) noexcept nogil:
    """exp(t) in float32: _exp_reduced times 2**n in two halves, so that overflow (inf),
    gradual underflow (0) and NaN come out of the arithmetic itself."""
    cdef int32_t n, h
    t = _select(t > <float>89, <float>89, t)     # NaN passes both clamps
    t = _select(t < <float>-104, <float>-104, t)
    cdef float p = _exp_reduced(t, &n)
    h = n >> 1
    return p * _pow2(h) * _pow2(n - h)


cdef inline float _exp_for_sigmoid(float t) noexcept nogil:
    """exp(t) where only 1 / (1 + exp(t)) is wanted, with fewer operations than _expf
    and the same quotient, bit for bit: t is clamped at -87 instead of -104 (below, exp(t)
    is under 2**-125 and 1 + exp(t) rounds to 1 either way), so 2**(n-1) is a normal
    number and p * 2**(n-1) * 2 scales exactly, overflowing where _expf does."""
    cdef int32_t n
    t = _select(t > <float>89, <float>89, t)     # NaN passes both clamps
    t = _select(t < <float>-87, <float>-87, t)
    cdef float p = _exp_reduced(t, &n)
    return p * _pow2(n - 1) * <float>2


cdef inline float _tanhf(float x) noexcept nogil:
    """tanh(x) in float32 (Cephes tanhf) on |x|, with x's sign bit put back (so -0.0 and
    NaN keep theirs): an odd polynomial below |x| = 0.625, else 1 - 2 / (exp(2|x|) + 1).
    Both are computed and one kept."""
    cdef _FloatBits bits
    bits.f = x
    cdef int32_t sign = bits.i & INT32_MIN
    bits.i = bits.i & INT32_MAX
    cdef float z = bits.f
    cdef float p = _select(z > <float>0.625, <float>0.625, z)
    cdef float s = p * p
    cdef float small = ((((<float>-5.70498872745e-3 * s + <float>2.06390887954e-2) * s
                          - <float>5.37397155531e-2) * s + <float>1.33314422036e-1) * s
                        - <float>3.33332819422e-1) * s * p + p
    cdef float big = <float>1 - <float>2 / (_expf(<float>2 * z) + <float>1)
    bits.f = _select(z > <float>0.625, big, small)
    bits.i = bits.i | sign
    return bits.f


cdef inline void _chunk(Op op, const floating* a, const floating* b, floating* out,
                        Py_ssize_t n, floating slope) noexcept nogil:
    """out[i] = op(a[i]) (forward) or op(a[i], b[i]) (backward: a the gradient, b the saved
    output, or the input for leaky_relu) for i < n. One loop per op, so each vectorizes
    (selects of computed values go through :func:`_select`)."""
    cdef Py_ssize_t i
    cdef floating v
    cdef floating one = 1  # a Cython literal 1 would be a C double: float32 math in double
    if op == RELU:
        for i in range(n):
            v = a[i]
            out[i] = 0 if v < 0 else v
    elif op == LEAKY_RELU:
        for i in range(n):
            v = a[i]
            out[i] = v * _select(v > 0, one, slope)  # v * 1 is v, exactly
    elif op == SIGMOID:
        for i in range(n):
            # exp(-x) overflows to inf below about -88 (float32): 1 / inf is the limit, 0.
            if floating is float:
                out[i] = one / (one + _exp_for_sigmoid(-a[i]))
            else:
                out[i] = one / (one + c_exp(-a[i]))
    elif op == TANH:
        for i in range(n):
            if floating is float:
                out[i] = _tanhf(a[i])
            else:
                out[i] = c_tanh(a[i])
    elif op == RELU_BACKWARD:
        for i in range(n):
            v = a[i]  # loaded unconditionally, so GCC selects instead of branching
            out[i] = 0 if b[i] <= 0 else v
    elif op == LEAKY_RELU_BACKWARD:
        for i in range(n):
            out[i] = a[i] * _select(b[i] > 0, one, slope)
    elif op == SIGMOID_BACKWARD:
        for i in range(n):
            out[i] = a[i] * (one - b[i]) * b[i]
    elif op == TANH_BACKWARD:
        for i in range(n):
            # Not 1 - y*y, which builds for FMA CPUs would fuse, rounding differently from
            # numpy; (1 - y)(1 + y) is also the more accurate where y is near +-1.
            out[i] = a[i] * ((one - b[i]) * (one + b[i]))


cdef void _run(Op op, const floating[::1] a, const floating[::1] b, floating[::1] out,
               double slope, int num_threads):
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t size = TRANSCENDENTAL_CHUNK if op in (SIGMOID, TANH) else CHEAP_CHUNK
    cdef Py_ssize_t chunks = (n + size - 1) // size
    cdef Py_ssize_t c, start
    cdef floating s = <floating>slope
    if n == 0:
        return
    with nogil:
        if chunks == 1 or num_threads == 1:
            _chunk(op, &a[0], &b[0], &out[0], n, s)
        else:
            for c in prange(chunks, schedule="static",
                            num_threads=num_threads if num_threads < chunks else chunks):
                start = c * size
                _chunk(op, &a[start], &b[start], &out[start],
                       size if size < n - start else n - start, s)


def relu(const floating[::1] x, floating[::1] out, int num_threads):
    """out = max(x, 0), NaN kept; x and out (may be x) of one length."""
    _run(RELU, x, x, out, 0.0, num_threads)


def leaky_relu(const floating[::1] x, floating[::1] out, double negative_slope, int num_threads):
    """out = x if x > 0 else x * negative_slope (the slope rounded to x's dtype)."""
    _run(LEAKY_RELU, x, x, out, negative_slope, num_threads)


def sigmoid(const floating[::1] x, floating[::1] out, int num_threads):
    """out = 1 / (1 + exp(-x))."""
    _run(SIGMOID, x, x, out, 0.0, num_threads)


def tanh(const floating[::1] x, floating[::1] out, int num_threads):
    """out = tanh(x)."""
    _run(TANH, x, x, out, 0.0, num_threads)


def relu_backward(const floating[::1] grad_output, const floating[::1] output,
                  floating[::1] out, int num_threads):
    """out = 0 where output <= 0, else grad_output."""
    _run(RELU_BACKWARD, grad_output, output, out, 0.0, num_threads)


def leaky_relu_backward(const floating[::1] grad_output, const floating[::1] x,
                        floating[::1] out, double negative_slope, int num_threads):
    """out = grad_output where x > 0, else grad_output * negative_slope."""
    _run(LEAKY_RELU_BACKWARD, grad_output, x, out, negative_slope, num_threads)


def sigmoid_backward(const floating[::1] grad_output, const floating[::1] output,
                     floating[::1] out, int num_threads):
    """out = grad_output * (1 - output) * output."""
    _run(SIGMOID_BACKWARD, grad_output, output, out, 0.0, num_threads)


def tanh_backward(const floating[::1] grad_output, const floating[::1] output,
                  floating[::1] out, int num_threads):
    """out = grad_output * ((1 - output) * (1 + output))."""
    _run(TANH_BACKWARD, grad_output, output, out, 0.0, num_threads)

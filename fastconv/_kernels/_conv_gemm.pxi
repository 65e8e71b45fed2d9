# The GEMM route: im2col of a tile, then one GEMM per group (forward and every gradient).


def conv2d_gemm(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                const floating[::1] bias, floating[:, :, :, ::1] out, floating[::1] work,
                Py_ssize_t work_stride, Py_ssize_t images_per_tile, Py_ssize_t rows_per_tile,
                Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                Py_ssize_t dh, Py_ssize_t dw, int groups, int num_threads):
    """out = conv(x, weight) + bias: im2col of a tile, then one GEMM per group.

    A tile is ``images_per_tile`` whole images (their columns side by side, so small
    images still make a wide GEMM; the result goes through a buffer into out), or output
    rows [oh0, oh0 + rows_per_tile) of one image (so a large image's columns stay in cache;
    the GEMM writes out directly). Each thread has work_stride items of work: the tile's
    column matrix (Cg*kh*kw, tile columns), then for multi-image tiles a (K/groups, tile
    columns) result. Pointwise convolutions with one-image tiles read x as the columns.
    bias is empty for no bias.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, Ho = out.shape[2], Wo = out.shape[3], L = Ho * Wo
    cdef Py_ssize_t CKK = Cg * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t strips = (Ho + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t n_tiles = (N + images_per_tile - 1) // images_per_tile * strips
    cdef Py_ssize_t t, n0, nb, oh0, oh1, width, grp, b, k, l
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, Ho, Wo)
    cdef bint pointwise = is_pointwise(&g), has_bias = bias.shape[0] > 0
    cdef floating beta
    cdef floating* col
    cdef floating* res
    cdef floating* og
    cdef const floating* colp
    cdef const floating* rk
    for t in prange(n_tiles, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * work_stride
        n0 = t // strips * images_per_tile
        nb = min(images_per_tile, N - n0)
        oh0 = t % strips * rows_per_tile
        oh1 = min(oh0 + rows_per_tile, Ho)
        width = (oh1 - oh0) * Wo
        res = col + CKK * nb * width
        for grp in range(groups):
            if nb == 1:
                og = &out[n0, grp * Kg, oh0, 0]
                beta = 0
                if has_bias:
                    beta = 1
                    for k in range(Kg):
                        for l in range(width):
                            og[k * L + l] = bias[grp * Kg + k]
                if pointwise:
                    colp = &x[n0, grp * Cg, oh0, 0]
                else:
                    im2col_image(&x[n0, grp * Cg, 0, 0], col, &g, oh0, oh1, width)
                    colp = col
                gemm(False, False, <int>Kg, <int>width, <int>CKK, <floating>1,
                     &weight[grp * Kg, 0, 0, 0], <int>CKK, colp, <int>(L if pointwise else width),
                     beta, og, <int>L)
            else:
                for b in range(nb):
                    im2col_image(&x[n0 + b, grp * Cg, 0, 0], col + b * L, &g, 0, Ho, nb * L)
                gemm(False, False, <int>Kg, <int>(nb * L), <int>CKK, <floating>1,
                     &weight[grp * Kg, 0, 0, 0], <int>CKK, col, <int>(nb * L), <floating>0,
                     res, <int>(nb * L))
                for b in range(nb):
                    og = &out[n0 + b, grp * Kg, 0, 0]
                    for k in range(Kg):
                        rk = res + k * nb * L + b * L
                        if has_bias:
                            for l in range(L):
                                og[k * L + l] = rk[l] + bias[grp * Kg + k]
                        else:
                            for l in range(L):
                                og[k * L + l] = rk[l]


def conv2d_backward(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                    floating[::1] grad_weight, floating[::1] grad_bias,
                    floating[::1] work, Py_ssize_t work_stride, Py_ssize_t images_per_tile,
                    Py_ssize_t rows_per_tile, floating[::1] partials, Py_ssize_t chunk,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw, int groups, bint needs_input_grad,
                    bint needs_weight_grad, bint needs_bias_grad, int num_threads):
    """Gradients of conv2d, each only when asked for, over the tiles of conv2d_gemm.

    With G the tile's grad_output as a (K/groups, tile columns) matrix per group:
    grad_input += col2im(W^T @ G); grad_weight += G @ im2col(x)^T; grad_bias += G's row sums.
    Images go in fixed-size chunks of ``chunk`` (a multiple of images_per_tile); each chunk
    sums its tiles in order into its own slot of partials (ceil(N/chunk) slots of
    K*Cg*kh*kw + K items), then the slots are added in chunk order. Neither the chunks nor
    the tiles depend on the thread count, so neither does the result, bit for bit.
    work: per thread, work_stride items: a column matrix (Cg*kh*kw, tile columns), then for
    multi-image tiles G gathered from grad_output.
    """
    cdef Py_ssize_t N = x.shape[0], K = weight.shape[0], Cg = weight.shape[1]
    cdef Py_ssize_t Kg = K // groups, Ho = grad_output.shape[2], Wo = grad_output.shape[3]
    cdef Py_ssize_t L = Ho * Wo, CKK = Cg * weight.shape[2] * weight.shape[3]
    cdef Py_ssize_t HW = x.shape[2] * x.shape[3]
    cdef Py_ssize_t wsize = K * CKK, slot = wsize + K
    cdef Py_ssize_t n_chunks = (N + chunk - 1) // chunk
    cdef Py_ssize_t strips = (Ho + rows_per_tile - 1) // rows_per_tile
    cdef Py_ssize_t b, n0, nb, s, oh0, oh1, width, cols, ld, grp, k, l, i, first, last
    cdef Geometry g = make_geometry(Cg, x.shape[2], x.shape[3], weight.shape[2], weight.shape[3],
                                    sh, sw, ph, pw, dh, dw, Ho, Wo)
    cdef bint pointwise = is_pointwise(&g)
    cdef floating acc, beta
    cdef floating* col
    cdef floating* gbuf
    cdef floating* part
    cdef const floating* go
    cdef const floating* colp
    for b in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        col = &work[0] + threadid() * work_stride
        # partials is empty when only grad_input is asked for: no slot to point at
        part = (&partials[0] + b * slot) if partials.shape[0] > 0 else NULL
        first = b * chunk
        last = min(first + chunk, N)
        n0 = first
        while n0 < last:
            nb = min(images_per_tile, last - n0)
            for s in range(strips):
                oh0 = s * rows_per_tile
                oh1 = min(oh0 + rows_per_tile, Ho)
                width = (oh1 - oh0) * Wo
                cols = nb * width
                gbuf = col + CKK * cols
                # the chunk's first tile overwrites its slot, the others add to it
                beta = 0 if n0 == first and s == 0 else 1
                for grp in range(groups):
                    if nb == 1:
                        go = &grad_output[n0, grp * Kg, oh0, 0]
                        ld = L
                    else:
                        for k in range(Kg):
                            for i in range(nb):
                                memcpy(gbuf + k * cols + i * L,
                                       &grad_output[n0 + i, grp * Kg + k, 0, 0],
                                       L * sizeof(floating))
                        go = gbuf
                        ld = cols
                    if needs_weight_grad:
                        if pointwise and nb == 1:
                            colp = &x[n0, grp * Cg, oh0, 0]
                        else:
                            for i in range(nb):
                                im2col_image(&x[n0 + i, grp * Cg, 0, 0], col + i * width, &g,
                                             oh0, oh1, cols)
                            colp = col
                        gemm(False, True, <int>Kg, <int>CKK, <int>cols, <floating>1, go, <int>ld,
                             colp, <int>(L if pointwise and nb == 1 else cols), beta,
                             part + grp * Kg * CKK, <int>CKK)
                    if needs_bias_grad:
                        for k in range(Kg):
                            acc = row_sum(go + k * ld, cols)
                            if beta == 0:
                                part[wsize + grp * Kg + k] = acc
                            else:
                                part[wsize + grp * Kg + k] += acc
                    if needs_input_grad:
                        if pointwise and nb == 1:
                            gemm(True, False, <int>CKK, <int>width, <int>Kg, <floating>1,
                                 &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>ld, <floating>0,
                                 &grad_input[n0, grp * Cg, oh0, 0], <int>HW)
                        else:
                            gemm(True, False, <int>CKK, <int>cols, <int>Kg, <floating>1,
                                 &weight[grp * Kg, 0, 0, 0], <int>CKK, go, <int>ld, <floating>0,
                                 col, <int>cols)
                            for i in range(nb):
                                if s == 0:
                                    memset(&grad_input[n0 + i, grp * Cg, 0, 0], 0,
                                           Cg * HW * sizeof(floating))
                                col2im_image(col + i * width, &grad_input[n0 + i, grp * Cg, 0, 0],
                                             &g, oh0, oh1, cols)
            n0 = n0 + nb
    if needs_weight_grad:
        sum_slots(&partials[0], n_chunks, slot, 0, wsize, &grad_weight[0], num_threads)
    if needs_bias_grad:
        sum_slots(&partials[0], n_chunks, slot, wsize, slot, &grad_bias[0], num_threads)

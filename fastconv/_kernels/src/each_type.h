/* Includes the kernel file named by FC_IMPL once per element type: with FC_T float and
 * FC_FN(name) name##_f, then with double and name##_d (see simd.h). No include guard: a
 * family header includes it once for each of its *_impl.h files. */
#define FC_T float
#define FC_FN(name) name##_f
#include FC_IMPL
#undef FC_T
#undef FC_FN

#define FC_T double
#define FC_FN(name) name##_d
#include FC_IMPL
#undef FC_T
#undef FC_FN

#undef FC_IMPL

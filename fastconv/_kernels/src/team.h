/* A barrier for the threads of the enclosing OpenMP parallel region: the compiled network's
 * batch-1 path runs every op of an image in one region, its threads meeting between ops
 * (cheaper than a region per op). Called outside a region, or in a build without OpenMP, it
 * does nothing. */
#ifndef FASTCONV_TEAM_H
#define FASTCONV_TEAM_H

#ifdef _OPENMP
#include <omp.h>
#endif

static inline void fc_team_barrier(void) {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

/* The threads of the enclosing region (1 outside one): the team the runtime gave, which may
 * be fewer than asked for. */
static inline int fc_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

#endif /* FASTCONV_TEAM_H */

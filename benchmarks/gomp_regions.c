/* Counts the OpenMP parallel regions a process opens (torch's elementwise ops and reductions, MKL's GEMMs), for
 * benchmarks/bench_core.py: on a CPU shared with other jobs each region waits for its slowest thread, so at two
 * threads a busy machine's times follow the number of regions more than the work. Load-independent.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/libgomp_regions.so benchmarks/gomp_regions.c -ldl
 *   LD_PRELOAD=/tmp/libgomp_regions.so python benchmarks/bench_core.py --parts 2
 *
 * It wraps libgomp's GOMP_parallel (the entry of every `#pragma omp parallel` that GCC compiles) and counts the calls;
 * gomp_regions() returns the count so far. */
#define _GNU_SOURCE
#include <dlfcn.h>

static unsigned long regions = 0;

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags) {
    static gomp_parallel_fn next = 0;
    if (!next)
        next = (gomp_parallel_fn)dlsym(RTLD_NEXT, "GOMP_parallel");
    __atomic_add_fetch(&regions, 1, __ATOMIC_RELAXED);
    next(fn, data, num_threads, flags);
}

unsigned long gomp_regions(void) { return regions; }

/* The most arithmetic this CPU's vector units can do, measured: N threads each run a loop of
 * independent AVX512-BF16 dot products (vdpbf16ps on 512-bit registers: 32 bf16 products summed
 * into 16 f32 lanes, 64 FLOP per instruction) and then of AVX-512 f32 FMAs (32 FLOP), twelve
 * accumulators deep so latency never stalls them. No memory is touched: this is the ceiling for any
 * bf16 / f32 matrix product on these cores, whoever writes the kernel.
 *
 *   cc -O2 -pthread scripts/cpu_peak.c -o cpu_peak && ./cpu_peak 2
 *
 * Prints one JSON line: threads, bf16_gflops, f32_gflops. Used by scripts/bench_prefill_ceiling.py.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 50000000L

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define TWELVE(op) \
    op " %%zmm20,%%zmm21,%%zmm0\n" op " %%zmm20,%%zmm21,%%zmm1\n" op " %%zmm20,%%zmm21,%%zmm2\n"     \
    op " %%zmm20,%%zmm21,%%zmm3\n" op " %%zmm20,%%zmm21,%%zmm4\n" op " %%zmm20,%%zmm21,%%zmm5\n"      \
    op " %%zmm20,%%zmm21,%%zmm6\n" op " %%zmm20,%%zmm21,%%zmm7\n" op " %%zmm20,%%zmm21,%%zmm8\n"      \
    op " %%zmm20,%%zmm21,%%zmm9\n" op " %%zmm20,%%zmm21,%%zmm10\n" op " %%zmm20,%%zmm21,%%zmm11\n"

#define CLOBBERS "rcx", "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", \
                 "zmm9", "zmm10", "zmm11", "zmm20", "zmm21"

/* Zero inputs and accumulators: no denormals, nothing to depend on. */
#define Z(r) "vpxord %%zmm" #r ",%%zmm" #r ",%%zmm" #r "\n"
#define ZERO Z(20) Z(21) Z(0) Z(1) Z(2) Z(3) Z(4) Z(5) Z(6) Z(7) Z(8) Z(9) Z(10) Z(11)

__attribute__((target("avx512f"))) static void bf16_loop(long n) {
    __asm__ volatile(ZERO
                     "mov %0, %%rcx\n1:\n" TWELVE("vdpbf16ps") "dec %%rcx\n jnz 1b\n"
                     :: "r"(n) : CLOBBERS);
}

__attribute__((target("avx512f"))) static void f32_loop(long n) {
    __asm__ volatile(ZERO
                     "mov %0, %%rcx\n1:\n" TWELVE("vfmadd231ps") "dec %%rcx\n jnz 1b\n"
                     :: "r"(n) : CLOBBERS);
}

static pthread_barrier_t start;
static int which; /* 0: bf16, 1: f32 */

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    if (which == 0) bf16_loop(ITERS); else f32_loop(ITERS);
    return NULL;
}

/* GFLOP/s of all threads together for one loop kind. */
static double measure(int threads, int kind, double flop_per_instr) {
    which = kind;
    pthread_t t[256];
    pthread_barrier_init(&start, NULL, threads + 1);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    pthread_barrier_wait(&start);
    double t0 = now();
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double dt = now() - t0;
    pthread_barrier_destroy(&start);
    return threads * (double)ITERS * 12 * flop_per_instr / dt / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "cpu_peak: threads must be 1..256\n");
        return 2;
    }
    measure(threads, 1, 32); /* warm up the clocks */
    double bf16 = measure(threads, 0, 64), f32 = measure(threads, 1, 32);
    printf("{\"threads\": %d, \"bf16_gflops\": %.1f, \"f32_gflops\": %.1f}\n", threads, bf16, f32);
    return 0;
}

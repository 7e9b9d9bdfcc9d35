/*
 * Core-to-core handoff: two threads pinned to CPUs 0 and 1 take turns on one cache line, and
 * the time of one turn is printed. It tells how far apart two vCPUs are (sharing a core's
 * caches, a CCX, or neither), which decides what every cross-thread handoff of the engine
 * costs (a woken caller, a stolen task, a shared counter): scripts/bench.sh prints it with the
 * machine's facts, because a VM's vCPUs may be placed differently from one hour to the next.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define TURNS 2000000L

static _Atomic long turn;

static void *player(void *arg) {
    long me = (long)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)me, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) return (void *)1;
    for (long i = 0; i < TURNS; i++) {
        while (atomic_load_explicit(&turn, memory_order_acquire) % 2 != me) {
        }
        atomic_fetch_add_explicit(&turn, 1, memory_order_release);
    }
    return NULL;
}

int main(void) {
    pthread_t t[2];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, player, (void *)i);
    void *r0, *r1;
    pthread_join(t[0], &r0);
    pthread_join(t[1], &r1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (r0 || r1) {
        printf("? (cannot pin threads to CPUs 0 and 1)\n");
        return 0;
    }
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.0f ns one way (CPU 0 <-> 1, a cache line taken in turns)\n", ns / (2.0 * TURNS));
    return 0;
}
